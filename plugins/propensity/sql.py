"""Render the Query Service SQL templates (``include/sql``) outside Airflow, exactly as Airflow would.

Airflow renders a task's ``.sql`` file with a sandboxed Jinja environment: ``FileSystemLoader`` on
the template search path, ``StrictUndefined`` and the ``do`` extension. ``AEPQueryOperator`` adds
``tenant`` (the org's tenant id, for ``_{tenant}.userid``) to the template context; everything else
comes as ``params``. This module does the same for tests and tools. The templates are Spark SQL
over nested XDM, the one text AEP's Query Service and the emulator's both run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

SQL_DIR = Path(__file__).resolve().parents[2] / "include" / "sql"


def template_env() -> jinja2.Environment:
    """A Jinja environment with Airflow's template settings and ``include/sql`` as the search path."""
    return jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(SQL_DIR)),
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.do"],
        cache_size=0,
    )


def render(template_name: str, *, tenant: str, params: dict[str, Any]) -> str:
    """Render one SQL template.

    :param template_name: path under ``include/sql``, e.g. ``featurize.sql``.
    :param tenant: the AEP tenant id (``acme`` gives ``_acme.userid``).
    :param params: the task's params (merge ``propensity.events.TEMPLATE_PARAMS`` for the event constants).
    """
    return template_env().get_template(template_name).render(tenant=tenant, params=params)

"""Render the Query Service SQL templates (``include/sql``) outside Airflow, exactly as Airflow would.

Airflow renders a task's ``.sql`` file with a sandboxed Jinja environment: ``FileSystemLoader`` on
the template search path, ``StrictUndefined`` and the ``do`` extension. ``AEPQueryOperator`` adds ``dialect`` and ``tenant``
(from the Query Service connection) to the template context, where the XDM macros, imported
``with context``, read them; everything else comes as ``params``. This module does the same for
tests and tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

SQL_DIR = Path(__file__).resolve().parents[2] / "include" / "sql"
DIALECTS = ("spark", "postgres")
"""``spark``: the real Query Service. ``postgres``: the emulator's tables with dotted leaf columns."""


def template_env() -> jinja2.Environment:
    """A Jinja environment with Airflow's template settings and ``include/sql`` as the search path."""
    return jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(SQL_DIR)),
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.do"],
        cache_size=0,
    )


def render(template_name: str, *, dialect: str, tenant: str, params: dict[str, Any]) -> str:
    """Render one SQL template.

    :param template_name: path under ``include/sql``, e.g. ``featurize.sql``.
    :param dialect: ``spark`` or ``postgres``.
    :param tenant: the AEP tenant id (``acme`` gives ``_acme.userid``).
    :param params: the task's params (merge ``propensity.events.TEMPLATE_PARAMS`` for the event constants).
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
    return template_env().get_template(template_name).render(dialect=dialect, tenant=tenant, params=params)

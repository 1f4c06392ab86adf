"""Tests of the provider metadata that registers the ``aep`` connection type."""

from __future__ import annotations

import importlib

from aep_hooks.get_provider_info import get_provider_info
from aep_hooks.hooks import AEPHook


def _import(dotted_path: str):
    module, _, name = dotted_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_declares_the_aep_connection_type():
    (connection_type,) = get_provider_info()["connection-types"]

    assert connection_type["connection-type"] == "aep"
    hook_class = _import(connection_type["hook-class-name"])
    assert hook_class is AEPHook
    assert (hook_class.conn_type, hook_class.conn_name_attr, hook_class.default_conn_name) == (
        "aep",
        "aep_conn_id",
        "aep_default",
    )


def test_declares_the_connection_fields():
    (connection_type,) = get_provider_info()["connection-types"]

    assert set(connection_type["conn-fields"]) == {"org_id", "sandbox", "ims_url", "scopes", "qs_sslmode"}
    assert connection_type["ui-field-behaviour"]["relabeling"] == {
        "host": "Platform URL",
        "login": "Client ID",
        "password": "Client secret",
    }
    assert connection_type["conn-fields"]["qs_sslmode"]["schema"]["default"] == "require"


def test_extra_links_are_importable_operator_links():
    from airflow.sdk import BaseOperatorLink

    links = get_provider_info()["extra-links"]

    assert {
        "aep_hooks.links.AEPBatchLink",
        "aep_hooks.links.AEPDatasetLink",
        "aep_hooks.links.AEPQueryLink",
        "aep_hooks.links.AEPAudienceLink",
    } <= set(links)
    assert all(issubclass(_import(link), BaseOperatorLink) for link in links)


def test_declared_modules_import():
    info = get_provider_info()
    for kind in ("hooks", "operators", "triggers", "sensors"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)

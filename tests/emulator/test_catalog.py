"""Catalog: datasets (tables, tags, classification, filters, paging, PATCH, DELETE) and module contract."""

import psycopg
import pytest

from aep_emulator.db import sandbox_schema
from aep_emulator.services import catalog
from tests.emulator import CATALOG, create_dataset, create_event_schema, create_profile_schema, get_dataset, unique
from tests.support.openapi import validate_response

pytestmark = pytest.mark.integration


def _table_exists(settings, sandbox: str, table: str) -> bool:
    with psycopg.connect(settings.pg_dsn) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'{sandbox_schema(sandbox)}."{table}"',)).fetchone()[
            0
        ]


def test_create_dataset_makes_table_with_leaf_columns(aep, emulator, sandbox):
    schema = create_event_schema(aep, emulator.settings.tenant_id)
    name = unique("Web Events!")
    resp = aep.post(f"{CATALOG}/dataSets", json={"name": name, "schemaRef": {"id": schema["$id"]}})
    assert resp.status_code == 201
    validate_response(resp)
    dataset_id = resp.json()[0].split("/")[-1]
    got = aep.get(f"{CATALOG}/dataSets/{dataset_id}")
    validate_response(got)
    dataset = got.json()[dataset_id]
    table = dataset["tags"]["adobe/pqs/table"][0]
    assert table == name.lower().replace(" ", "_").replace("!", "")
    assert dataset["classification"]["dataBehavior"] == "time-series"
    with psycopg.connect(emulator.settings.pg_dsn) as conn:
        columns = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema=%s AND table_name=%s",
                (sandbox_schema(sandbox), table),
            )
        }
    assert columns["timestamp"] == "timestamp with time zone"
    assert columns["web.webPageDetails.pageViews.value"] == "double precision"
    assert columns[f"_{emulator.settings.tenant_id}.userid"] == "text"
    assert columns["identityMap"] == "jsonb"
    assert columns["_acp_system_metadata.ingestTime"] == "bigint"


def test_same_name_gets_a_distinct_table_and_profile_is_record(aep, emulator):
    schema = create_profile_schema(aep, emulator.settings.tenant_id)
    name = unique("scores")
    first, second = (get_dataset(aep, create_dataset(aep, schema, name)) for _ in range(2))
    assert first["classification"]["dataBehavior"] == "record"
    assert first["tags"]["adobe/pqs/table"][0] + "_1" == second["tags"]["adobe/pqs/table"][0]


def test_unknown_schema_is_rejected_without_a_table(aep):
    resp = aep.post(
        f"{CATALOG}/dataSets", json={"name": "x", "schemaRef": {"id": "https://ns.adobe.com/acme/schemas/none"}}
    )
    assert resp.status_code == 400
    assert "schemas/none" in resp.json()["detail"]


def test_list_filters_paging_and_projection(aep, emulator):
    schema = create_event_schema(aep, emulator.settings.tenant_id)
    prefix = unique("listing").replace(" ", "_")
    ids = [create_dataset(aep, schema, f"{prefix}_{i}") for i in range(3)]
    resp = aep.get(
        f"{CATALOG}/dataSets",
        params={"property": f"name~^{prefix}", "orderBy": "desc:created", "limit": 2, "properties": "name,tags"},
    )
    assert resp.status_code == 200
    validate_response(resp)
    assert list(resp.json()) == [ids[2], ids[1]]
    assert set(resp.json()[ids[2]]) == {"name", "tags"}
    page2 = aep.get(
        f"{CATALOG}/dataSets", params={"property": f"name~^{prefix}", "orderBy": "desc:created", "limit": 2, "start": 2}
    )
    assert list(page2.json()) == [ids[0]]
    by_name = aep.get(f"{CATALOG}/dataSets", params={"name": f"{prefix}_1"})
    assert list(by_name.json()) == [ids[1]]
    assert aep.get(f"{CATALOG}/dataSets", params={"limit": 0}).status_code == 400


def test_patch_enables_profile_and_needs_json_patch(aep, emulator):
    dataset_id = create_dataset(aep, create_profile_schema(aep, emulator.settings.tenant_id))
    ops = [
        {"op": "add", "path": "/tags/unifiedProfile", "value": ["enabled:true"]},
        {"op": "add", "path": "/tags/unifiedIdentity", "value": ["enabled:true"]},
    ]
    wrong = aep.patch(f"{CATALOG}/dataSets/{dataset_id}", json=ops)
    assert wrong.status_code == 400
    assert "json-patch+json" in wrong.json()["detail"]
    resp = aep.patch(
        f"{CATALOG}/dataSets/{dataset_id}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert resp.status_code == 200
    validate_response(resp)
    dataset = get_dataset(aep, dataset_id)
    assert dataset["tags"]["unifiedProfile"] == ["enabled:true"]
    assert dataset["version"] == "1.0.1"
    tagged = aep.get(f"{CATALOG}/dataSets", params={"tags": "unifiedProfile:enabled:true", "limit": 100})
    assert dataset_id in tagged.json()


def test_delete_drops_table(aep, emulator, sandbox):
    dataset_id = create_dataset(aep, create_event_schema(aep, emulator.settings.tenant_id))
    table = get_dataset(aep, dataset_id)["tags"]["adobe/pqs/table"][0]
    assert _table_exists(emulator.settings, sandbox, table)
    resp = aep.delete(f"{CATALOG}/dataSets/{dataset_id}")
    assert resp.status_code == 200
    validate_response(resp)
    assert not _table_exists(emulator.settings, sandbox, table)
    assert aep.get(f"{CATALOG}/dataSets/{dataset_id}").status_code == 404


def test_module_contract_for_other_services(aep, emulator, sandbox):
    emu = emulator.emu
    schema = create_event_schema(aep, emulator.settings.tenant_id)
    table = unique("ctas").replace(" ", "_")
    doc = catalog.create_dataset_record(emu, sandbox, name=table, schema_ref=schema["$id"], table_name=table)
    assert catalog.get_dataset(emu, sandbox, doc["id"])["tags"]["adobe/pqs/table"] == [table]
    assert catalog.find_dataset_by_table(emu, sandbox, table.upper())["id"] == doc["id"]
    with pytest.raises(catalog.DatasetError, match="already exists"):
        catalog.create_dataset_record(emu, sandbox, name="again", schema_ref=schema["$id"], table_name=table)
    assert catalog.delete_dataset(emu, sandbox, doc["id"])
    assert catalog.find_dataset_by_table(emu, sandbox, table) is None
    assert not _table_exists(emulator.settings, sandbox, table)

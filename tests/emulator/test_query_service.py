"""Query Service REST API: connection parameters, the query state machine, CTAS/INSERT/DROP and
their Catalog datasets, errors, cancel, timeout, templates and paging."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from aep_emulator import xdm
from aep_emulator.db import sandbox_schema
from aep_emulator.services import catalog
from tests.support.openapi import validate_response

pytestmark = pytest.mark.integration

QS = "/data/foundation/query"
TERMINAL = {"SUCCESS", "FAILED", "KILLED", "TIMEOUT"}


def submit(aep, sql: str | None = None, **body) -> dict:
    if sql is not None:
        body["sql"] = sql
    resp = aep.post(f"{QS}/queries", json={"dbName": f"{aep.sandbox}:all", **body})
    assert resp.status_code == 202, resp.text
    validate_response(resp)
    return resp.json()


def wait_for(aep, query_id: str, states=TERMINAL, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        resp = aep.get(f"{QS}/queries/{query_id}")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if body["state"] in states:
            validate_response(resp)
            return body
        assert time.monotonic() < deadline, f"query {query_id} still {body['state']}"
        time.sleep(0.05)


def run(aep, sql: str | None = None, **body) -> dict:
    return wait_for(aep, submit(aep, sql, **body)["id"])


def sql_rows(emulator, sandbox: str, sql: str) -> list[tuple]:
    """Read straight from PostgreSQL, in the sandbox's schema (REST never returns rows)."""
    with psycopg.connect(emulator.settings.pg_dsn, options=f"-c search_path={sandbox_schema(sandbox)}") as conn:
        return conn.execute(sql).fetchall()


def datasets_named(aep, name: str) -> dict:
    resp = aep.get("/data/foundation/catalog/dataSets", params={"name": name})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_connection_parameters_point_at_the_proxy(aep, emulator, sandbox):
    resp = aep.get(f"{QS}/connection_parameters")
    assert resp.status_code == 200
    validate_response(resp)
    body = resp.json()
    assert body["username"] == emulator.settings.org_id
    assert body["dbName"] == f"{sandbox}:all"
    assert (body["host"], body["port"]) == ("127.0.0.1", emulator.settings.qs_port)
    assert body["token"] == aep.token
    # AEP sends websocketHost although its spec spells it websoketHost (docs/aep-behaviour.md#query-service).
    assert "websocketHost" in body and "websoketHost" not in body


def test_query_runs_to_success(aep):
    created = submit(aep, "SELECT 1 AS n UNION ALL SELECT 2", name="two rows")
    assert created["state"] == "SUBMITTED"
    assert created["errors"] == [] and created["isCTAS"] is False and created["isInsertInto"] is False
    assert created["request"]["name"] == "two rows"
    assert created["_links"]["cancel"]["method"] == "PATCH"
    done = wait_for(aep, created["id"])
    assert done["state"] == "SUCCESS", done["errors"]
    assert done["rowCount"] == 2
    assert done["created"] == created["created"] and done["updated"] >= created["updated"]


def test_unknown_query_is_404(aep):
    assert aep.get(f"{QS}/queries/{uuid.uuid4()}").status_code == 404


def test_create_rejects_a_bad_payload(aep, sandbox):
    assert aep.post(f"{QS}/queries", json={"dbName": f"{sandbox}:all"}).status_code == 400
    assert aep.post(f"{QS}/queries", json={"dbName": "othersandbox:all", "sql": "SELECT 1"}).status_code == 400
    resp = aep.post(f"{QS}/queries", json={"dbName": f"{sandbox}:all", "sql": "SELECT $missing"})
    assert resp.status_code == 400 and "missing" in resp.json()["message"]


def test_ctas_registers_a_dataset_and_drop_removes_it(aep, emulator, sandbox):
    ctas = "DROP TABLE IF EXISTS qs_ctas; CREATE TABLE qs_ctas AS (SELECT 7::bigint AS n, 'u1' AS \"_acme.userid\")"
    first = run(aep, ctas)
    assert first["state"] == "SUCCESS", first["errors"]
    assert first["isCTAS"] is True and first["rowCount"] == 1
    dataset_id = first["_links"]["created_dataset"]["id"]
    found = datasets_named(aep, "qs_ctas")
    assert list(found) == [dataset_id]
    dataset = found[dataset_id]
    assert dataset["tags"]["adobe/pqs/table"] == ["qs_ctas"]
    fields = {f.path: f.xdm_type for f in xdm.leaf_fields(emulator.emu, sandbox, dataset["schemaRef"]["id"])}
    assert fields == {"n": "long", "_acme.userid": "string"}

    # The documented re-run idiom replaces table and dataset.
    second = run(aep, ctas)
    assert second["state"] == "SUCCESS", second["errors"]
    assert list(datasets_named(aep, "qs_ctas")) == [second["_links"]["created_dataset"]["id"]] != [dataset_id]
    assert sql_rows(emulator, sandbox, "SELECT n FROM qs_ctas") == [(7,)]

    again = run(aep, "CREATE TABLE qs_ctas AS SELECT 1 AS n")
    assert again["state"] == "FAILED" and again["errors"][0]["code"] == "42P07"
    assert run(aep, "CREATE TABLE IF NOT EXISTS qs_ctas AS SELECT 1 AS n")["state"] == "SUCCESS"

    appended = run(aep, "INSERT INTO qs_ctas SELECT 8, 'u2'")
    assert appended["state"] == "SUCCESS" and appended["isInsertInto"] is True and appended["rowCount"] == 1
    current_id = appended["_links"]["referenced_datasets"][0]["id"]
    by_dataset = aep.get(f"{QS}/queries", params={"property": f"referenced_datasets==nope||{current_id}"}).json()
    assert appended["id"] in [q["id"] for q in by_dataset["queries"]]
    assert sql_rows(emulator, sandbox, "SELECT n FROM qs_ctas ORDER BY n") == [(7,), (8,)]

    dropped = run(aep, "DROP TABLE qs_ctas")
    assert dropped["state"] == "SUCCESS", dropped["errors"]
    assert datasets_named(aep, "qs_ctas") == {}
    assert sql_rows(emulator, sandbox, "SELECT table_exists('qs_ctas')") == [(False,)]


def test_ctas_and_insert_parameters_wrap_the_select(aep, emulator, sandbox):
    title = f"QS param scores {uuid.uuid4().hex[:6]}"
    target_schema = xdm.register_adhoc_schema(emulator.emu, sandbox, title, [xdm.Field("score", "int")])
    created = run(
        aep,
        "SELECT 1 AS score",
        ctasParameters={"datasetName": "QS Param Scores", "description": "scores", "targetSchemaTitle": title},
    )
    assert created["state"] == "SUCCESS", created["errors"]
    assert created["isCTAS"] is True
    assert created["effectiveSQL"] == f"CREATE TABLE \"qs_param_scores\" WITH (schema='{title}') AS (SELECT 1 AS score)"
    dataset = datasets_named(aep, "QS Param Scores")[created["_links"]["created_dataset"]["id"]]
    assert dataset["tags"]["adobe/pqs/table"] == ["qs_param_scores"] and dataset["description"] == "scores"
    assert dataset["schemaRef"]["id"] == target_schema["$id"]

    inserted = run(aep, "SELECT 2", insertIntoParameters={"datasetName": "QS Param Scores"})
    assert inserted["state"] == "SUCCESS", inserted["errors"]
    assert inserted["isInsertInto"] is True
    assert sql_rows(emulator, sandbox, "SELECT score FROM qs_param_scores ORDER BY 1") == [(1,), (2,)]


def test_ctas_with_an_unknown_target_schema_fails(aep):
    failed = run(
        aep, "CREATE TABLE qs_no_schema WITH (schema='No such schema', rowvalidation='false') AS SELECT 1 AS n"
    )
    assert failed["state"] == "FAILED" and failed["errors"][0]["code"] == "42704"
    assert datasets_named(aep, "qs_no_schema") == {}


def test_ctas_after_a_leading_comment_is_recognised(aep):
    created = run(aep, "-- features\n/* v1 */ CREATE TABLE qs_commented AS SELECT 1 AS n")
    assert created["state"] == "SUCCESS" and created["isCTAS"] is True
    assert list(datasets_named(aep, "qs_commented")) == [created["_links"]["created_dataset"]["id"]]


def test_drop_table_of_an_ingested_dataset_is_refused(aep, emulator, sandbox):
    schema = xdm.register_adhoc_schema(
        emulator.emu, sandbox, f"ingested {uuid.uuid4().hex[:6]}", [xdm.Field("a", "string")]
    )
    dataset = catalog.create_dataset_record(emulator.emu, sandbox, name="qs ingested", schema_ref=schema["$id"])
    table = catalog.dataset_table(dataset)
    failed = run(aep, f"DROP TABLE {table}")
    assert failed["state"] == "FAILED"
    assert failed["errors"][0]["code"] == "42501" and failed["errors"][0]["errorType"] == "USER_ERROR"
    assert catalog.get_dataset(emulator.emu, sandbox, dataset["id"]) is not None
    assert sql_rows(emulator, sandbox, f"SELECT table_exists('{table}')") == [(True,)]
    # Other spellings of the DROP cannot get around the check.
    for sql in (
        f"DROP TABLE {table} CASCADE",
        f"DROP TABLE IF EXISTS qs_other, {table}",
        f"DROP TABLE {sandbox_schema(sandbox)}.{table}",
    ):
        refused = run(aep, sql)
        assert (refused["state"], refused["errors"][0]["code"]) == ("FAILED", "0A000"), sql
    assert sql_rows(emulator, sandbox, f"SELECT table_exists('{table}')") == [(True,)]


@pytest.mark.parametrize(
    ("sql", "code"),
    [("SELECT * FROM qs_no_such_table", "42P01"), ("SELEC 1", "42601"), ("SELECT 1/0", "22012")],
)
def test_failed_query_reports_its_sqlstate(aep, sql, code):
    failed = run(aep, sql)
    assert failed["state"] == "FAILED"
    [error] = failed["errors"]
    assert error["code"] == code and error["errorType"] == "USER_ERROR" and error["message"]


def test_failed_statement_rolls_back_the_whole_query(aep, emulator, sandbox):
    failed = run(aep, "CREATE TABLE qs_rolled_back AS SELECT 1 AS n; SELECT * FROM qs_no_such_table")
    assert failed["state"] == "FAILED"
    assert datasets_named(aep, "qs_rolled_back") == {}
    assert sql_rows(emulator, sandbox, "SELECT table_exists('qs_rolled_back')") == [(False,)]


def test_forced_failure_reports_58000(aep, emulator):
    emulator.emu.faults.configure({"force_failures": {"query": 1}})
    failed = run(aep, "SELECT 1")
    assert failed["state"] == "FAILED"
    assert failed["errors"][0]["code"] == "58000" and failed["errors"][0]["errorType"] == "SYSTEM_ERROR"
    assert run(aep, "SELECT 1")["state"] == "SUCCESS"


def test_cancel_kills_the_running_statement(aep, emulator):
    query = submit(aep, "SELECT pg_sleep(60)")
    wait_for(aep, query["id"], states={"IN_PROGRESS"})
    time.sleep(0.3)  # let the statement reach PostgreSQL
    started = time.monotonic()
    resp = aep.patch(f"{QS}/queries/{query['id']}", json={"op": "cancel"})
    assert resp.status_code == 202 and resp.json()["statusCode"] == 202
    assert wait_for(aep, query["id"], timeout=10)["state"] == "KILLED"
    assert time.monotonic() - started < 10
    sleeping = sql_rows(
        emulator, aep.sandbox, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'"
    )
    assert sleeping == [(0,)]
    assert aep.patch(f"{QS}/queries/{query['id']}", json={"op": "cancel"}).status_code == 409


def test_statement_timeout_ends_in_timeout(aep, emulator, monkeypatch):
    monkeypatch.setattr(
        emulator.emu, "settings", emulator.emu.settings.model_copy(update={"qs_statement_timeout_s": 1})
    )
    timed_out = run(aep, "SELECT pg_sleep(5)")
    assert timed_out["state"] == "TIMEOUT"
    assert timed_out["errors"][0]["code"] == "57014"


def test_template_with_parameters(aep):
    resp = aep.post(
        f"{QS}/query-templates",
        json={
            "name": f"qs template {uuid.uuid4().hex[:6]}",
            "sql": "SELECT $a::int + $b::int AS total",
            "queryParameters": {"a": "1", "b": "2"},
        },
    )
    assert resp.status_code == 202, resp.text
    validate_response(resp)
    template = resp.json()
    fetched = aep.get(f"{QS}/query-templates/{template['id']}")
    assert fetched.status_code == 200 and fetched.json()["sql"] == template["sql"]
    validate_response(fetched)
    listed = aep.get(f"{QS}/query-templates", params={"property": f"name~{template['name']}"})
    validate_response(listed)
    assert [t["id"] for t in listed.json()["templates"]] == [template["id"]]

    # Request parameters override the template's defaults.
    done = run(aep, templateId=template["id"], queryParameters={"b": "40"})
    assert done["state"] == "SUCCESS", done["errors"]
    assert done["effectiveSQL"] == "SELECT 1::int + 40::int AS total"
    assert done["templateName"] == template["name"] and done["request"]["templateId"] == template["id"]

    updated = aep.put(f"{QS}/query-templates/{template['id']}", json={"name": template["name"], "sql": "SELECT $c"})
    assert updated.status_code == 202
    validate_response(updated)
    missing = aep.post(f"{QS}/queries", json={"dbName": f"{aep.sandbox}:all", "templateId": template["id"]})
    assert missing.status_code == 400

    deleted = aep.delete(f"{QS}/query-templates/{template['id']}")
    assert deleted.status_code == 202
    validate_response(deleted)
    assert aep.get(f"{QS}/query-templates/{template['id']}").status_code == 404


def test_list_pages_without_a_next_link_on_the_last_page(aep):
    marker = f"paging_{uuid.uuid4().hex[:8]}"
    ids = [submit(aep, f"SELECT '{marker}' AS m, {i} AS i")["id"] for i in range(3)]
    resp = aep.get(f"{QS}/queries", params={"property": f"sql~{marker}", "limit": 2, "orderby": "+created"})
    assert resp.status_code == 200
    validate_response(resp)
    first = resp.json()
    assert [q["id"] for q in first["queries"]] == ids[:2]
    assert first["_page"]["count"] == 2
    follow = aep.session.get(first["_links"]["next"]["href"], headers=aep.headers(), timeout=30)
    second = follow.json()
    assert [q["id"] for q in second["queries"]] == ids[2:]
    assert "next" not in second["_links"]

    by_state = aep.get(f"{QS}/queries", params={"property": f"sql~{marker},id=={ids[0]}"}).json()
    assert [q["id"] for q in by_state["queries"]] == ids[:1]
    assert aep.get(f"{QS}/queries", params={"property": "sql==x"}).status_code == 400


def test_soft_delete_hides_the_query_from_lists(aep):
    marker = f"soft_{uuid.uuid4().hex[:8]}"
    query = run(aep, f"SELECT '{marker}'")
    resp = aep.patch(f"{QS}/queries/{query['id']}", json={"op": "soft_delete"})
    assert resp.status_code == 202
    listed = aep.get(f"{QS}/queries", params={"property": f"sql~{marker}"}).json()
    assert listed["queries"] == []
    included = aep.get(f"{QS}/queries", params={"property": f"sql~{marker}", "excludeSoftDeleted": "false"}).json()
    assert [q["id"] for q in included["queries"]] == [query["id"]]
    assert aep.get(f"{QS}/queries/{query['id']}").json()["state"] == "SUCCESS"

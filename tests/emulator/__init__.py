"""Emulator service tests, plus the setup steps they share (schema, dataset, batch)."""

from __future__ import annotations

import io
import time
import uuid
from urllib.parse import quote

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from aep_emulator.db import quote_ident, sandbox_schema
from aep_emulator.xdm import DIRECT_MARKETING_FIELD_GROUP, EXPERIENCE_EVENT, PROFILE, WEB_FIELD_GROUP

REGISTRY = "/data/foundation/schemaregistry"
CATALOG = "/data/foundation/catalog"
IMPORT = "/data/foundation/import"
EXPORT = "/data/foundation/export"
XED_JSON = {"Accept": "application/vnd.adobe.xed+json; version=1"}


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def field_group_body(tenant: str, title: str, intended: str = EXPERIENCE_EVENT) -> dict:
    """A tenant field group with ``_{tenant}.userid`` (string) and ``_{tenant}.propensity`` (number)."""
    return {
        "title": title,
        "type": "object",
        "meta:intendedToExtend": [intended],
        "definitions": {
            "customFields": {
                "properties": {
                    f"_{tenant}": {
                        "type": "object",
                        "properties": {"userid": {"type": "string"}, "propensity": {"type": "number"}},
                    }
                }
            }
        },
        "allOf": [{"$ref": "#/definitions/customFields"}],
    }


def create_field_group(aep, tenant: str, title: str | None = None, intended: str = EXPERIENCE_EVENT) -> dict:
    """:func:`field_group_body`, created."""
    resp = aep.post(f"{REGISTRY}/tenant/fieldgroups", json=field_group_body(tenant, title or unique("fg"), intended))
    assert resp.status_code == 201, resp.text
    return resp.json()


def create_event_schema(aep, tenant: str) -> dict:
    """An ExperienceEvent schema with the web, direct-marketing and tenant field groups."""
    field_group = create_field_group(aep, tenant)
    resp = aep.post(
        f"{REGISTRY}/tenant/schemas",
        json={
            "title": unique("events"),
            "type": "object",
            "allOf": [
                {"$ref": EXPERIENCE_EVENT},
                {"$ref": WEB_FIELD_GROUP},
                {"$ref": DIRECT_MARKETING_FIELD_GROUP},
                {"$ref": field_group["$id"]},
            ],
        },
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def create_profile_schema(aep, tenant: str) -> dict:
    field_group = create_field_group(aep, tenant, intended=PROFILE)
    resp = aep.post(
        f"{REGISTRY}/tenant/schemas",
        json={
            "title": unique("profiles"),
            "type": "object",
            "allOf": [{"$ref": PROFILE}, {"$ref": field_group["$id"]}],
        },
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def create_dataset(aep, schema: dict, name: str | None = None) -> str:
    resp = aep.post(
        f"{CATALOG}/dataSets",
        json={
            "name": name or unique("ds"),
            "schemaRef": {"id": schema["$id"], "contentType": "application/vnd.adobe.xed+json;version=1"},
        },
    )
    assert resp.status_code == 201, resp.text
    return resp.json()[0].rsplit("/", 1)[1]


def get_dataset(aep, dataset_id: str) -> dict:
    resp = aep.get(f"{CATALOG}/dataSets/{dataset_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()[dataset_id]


def create_batch(aep, dataset_id: str, fmt: str = "parquet", **extra) -> dict:
    resp = aep.post(f"{IMPORT}/batches", json={"datasetId": dataset_id, "inputFormat": {"format": fmt}, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def upload(aep, batch_id: str, dataset_id: str, name: str, data: bytes):
    return aep.put(
        f"{IMPORT}/batches/{batch_id}/datasets/{dataset_id}/files/{quote(name)}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def wait_for_batch(aep, batch_id: str, timeout: float = 60) -> dict:
    """Poll Catalog until the batch leaves loading/staging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = aep.get(f"{CATALOG}/batches/{batch_id}").json()[batch_id]
        if batch["status"] not in ("loading", "staging"):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} still {batch['status']} after {timeout} s")


def ingest(aep, dataset_id: str, files: dict[str, bytes], fmt: str = "parquet", **extra) -> dict:
    """Create a batch, upload the files, COMPLETE it and return the finished batch."""
    batch = create_batch(aep, dataset_id, fmt, **extra)
    for name, data in files.items():
        assert upload(aep, batch["id"], dataset_id, name, data).status_code == 200
    assert aep.post(f"{IMPORT}/batches/{batch['id']}", params={"action": "COMPLETE"}).status_code == 200
    return wait_for_batch(aep, batch["id"])


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def table_rows(settings, sandbox: str, table: str, where: str = "TRUE") -> int:
    """Row count of a dataset table, read straight from PostgreSQL."""
    with psycopg.connect(settings.pg_dsn) as conn:
        return conn.execute(
            f"SELECT count(*) FROM {sandbox_schema(sandbox)}.{quote_ident(table)} WHERE {where}"
        ).fetchone()[0]


def seed_schema(emu, sandbox: str, klass: str, title: str) -> str:
    """Store a tenant schema of ``klass`` directly (for tests that seed tables by SQL); returns its ``$id``."""
    from aep_emulator import xdm

    schema_id = f"https://ns.adobe.com/{emu.settings.tenant_id}/schemas/{uuid.uuid4().hex}"
    doc = {
        "$id": schema_id,
        "meta:altId": xdm.alt_id(schema_id),
        "meta:class": klass,
        "meta:containerId": "tenant",
        "meta:resourceType": "schemas",
        "title": title,
        "type": "object",
        "version": "1.0",
        "meta:registryMetadata": xdm.registry_metadata(emu),
    }
    emu.store.insert(sandbox, xdm.SCHEMA_KIND, doc["meta:altId"], doc, name=title)
    return schema_id

"""Data Access: a batch's files, their bytes with Range, failed files and row-error diagnostics."""

import json

import pytest

from tests.emulator import EXPORT, create_dataset, create_event_schema, ingest
from tests.support.openapi import validate_response

pytestmark = pytest.mark.integration

LINES = [
    {"_id": "a", "timestamp": "2024-05-01T00:00:00Z"},
    {"_id": "b", "timestamp": "not a date"},
]


@pytest.fixture
def dataset_id(aep, emulator):
    return create_dataset(aep, create_event_schema(aep, emulator.settings.tenant_id))


def _jsonl(records) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


def test_batch_files_listing_and_ranged_bytes(aep, dataset_id):
    data = _jsonl(LINES[:1])
    batch = ingest(aep, dataset_id, {"dir/events.json": data}, fmt="json")
    files = aep.get(f"{EXPORT}/batches/{batch['id']}/files")
    assert files.status_code == 200
    validate_response(files)
    file_id = files.json()["data"][0]["dataSetFileId"]
    listing = aep.get(f"{EXPORT}/files/{file_id}")
    validate_response(listing)
    assert listing.json()["data"][0]["name"] == "dir/events.json"
    assert listing.json()["data"][0]["length"] == str(len(data))
    whole = aep.get(f"{EXPORT}/files/{file_id}", params={"path": "dir/events.json"})
    assert whole.status_code == 200 and whole.content == data
    # Byte responses have no JSON body to validate against the spec.
    part = aep.get(f"{EXPORT}/files/{file_id}", params={"path": "dir/events.json"}, headers={"Range": "bytes=0-9"})
    assert part.status_code == 206
    assert part.content == data[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(data)}"


def test_failed_batch_exposes_files_and_row_errors(aep, dataset_id):
    data = _jsonl(LINES)
    batch = ingest(aep, dataset_id, {"events.json": data}, fmt="json", enableErrorDiagnostics=True)
    assert batch["status"] == "failed"
    assert aep.get(f"{EXPORT}/batches/{batch['id']}/files").json()["data"] == []
    failed = aep.get(f"{EXPORT}/batches/{batch['id']}/failed")
    validate_response(failed)
    assert [f["name"] for f in failed.json()["data"]] == ["events.json"]
    assert aep.get(f"{EXPORT}/batches/{batch['id']}/failed", params={"path": "events.json"}).content == data
    meta = aep.get(f"{EXPORT}/batches/{batch['id']}/meta", params={"path": "row_errors"})
    validate_response(meta)
    name = meta.json()["data"][0]["name"]
    errors = [
        json.loads(line)
        for line in aep.get(f"{EXPORT}/batches/{batch['id']}/meta", params={"path": name}).text.splitlines()
    ]
    assert errors[0]["row"] == 2 and "timestamp" in errors[0]["_errors"][0]["message"]


def test_unknown_batch_is_404(aep):
    assert aep.get(f"{EXPORT}/batches/nope/files").status_code == 404
    assert aep.get(f"{EXPORT}/files/nope-1").status_code == 404

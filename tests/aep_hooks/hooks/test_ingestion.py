"""Batch Ingestion: raw uploads, COMPLETE retried as idempotent."""

from __future__ import annotations

from tests.aep_hooks.conftest import PLATFORM


def test_upload_file_puts_raw_bytes(hook, ims, requests_mock):
    put = requests_mock.put(f"{PLATFORM}/data/foundation/import/batches/b1/datasets/ds1/files/dt=1/part-0.parquet")
    hook.upload_file("b1", "ds1", "dt=1/part-0.parquet", b"PAR1")
    assert (put.last_request.body, put.last_request.headers["Content-Type"]) == (
        b"PAR1",
        "application/octet-stream",
    )


def test_complete_is_retried_as_idempotent(hook, ims, requests_mock, sleep):
    complete = requests_mock.post(
        f"{PLATFORM}/data/foundation/import/batches/b1?action=COMPLETE",
        [{"status_code": 502}, {"status_code": 200}],
    )
    hook.complete_batch("b1")
    assert complete.call_count == 2

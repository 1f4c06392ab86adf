"""Ingestion benchmark: 1M ExperienceEvent rows as Parquet through the emulator's HTTP API.

Times PUT + COMPLETE + wait-for-success end to end and reports rows/s and the emulator's peak RSS.
By default it starts ``python -m aep_emulator`` in a subprocess (so its RSS is its own); ``--url``
targets a running emulator instead (RSS is then reported only with ``--pid``).

    .venv/bin/python -m bench.bench_ingest [--rows 1000000] [--files 4] [--url http://127.0.0.1:8765 --pid N]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import requests

from aep_emulator.config import PROJECT_ROOT, get_settings
from aep_emulator.xdm import DIRECT_MARKETING_FIELD_GROUP, EXPERIENCE_EVENT, WEB_FIELD_GROUP
from tests.support.emulator import AEPClient, free_port

TARGET_ROWS_PER_S = 300_000
TARGET_RSS_BYTES = 1 << 30
EVENT_TYPES = np.array(
    [
        "web.webpagedetails.pageViews",
        "web.webinteraction.linkClicks",
        "directMarketing.emailOpened",
        "directMarketing.emailClicked",
        "directMarketing.emailSent",
    ]
)


def _text(values: np.ndarray) -> pa.Array:
    # NumPy unicode arrays may convert to chunked arrays; object arrays always give one Array.
    return pa.array(values.astype(object), pa.string())


def event_table(rows: int, tenant: str, seed: int = 7) -> pa.Table:
    """Synthetic ExperienceEvents shaped like the pipeline's: nested web/directMarketing/tenant objects."""
    rng = np.random.default_rng(seed)
    users = _text(np.char.add("user-", rng.integers(0, 50_000, rows).astype(str)))
    start = np.datetime64("2024-01-01T00:00:00", "us")
    timestamps = pa.array(
        start + rng.integers(0, 90 * 86_400_000_000, rows).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC")
    )
    kinds = rng.integers(0, len(EVENT_TYPES), rows)
    is_web = kinds < 2
    page_views = pa.StructArray.from_arrays([pa.array(np.where(kinds == 0, 1.0, 0.0))], names=["value"])
    web = pa.StructArray.from_arrays(
        [
            pa.StructArray.from_arrays(
                [
                    _text(np.char.add("https://acme.example/p/", (kinds * 7 + rng.integers(0, 40, rows)).astype(str))),
                    _text(np.char.add("page ", rng.integers(0, 40, rows).astype(str))),
                    page_views,
                ],
                names=["URL", "name", "pageViews"],
            ),
            pa.StructArray.from_arrays(
                [
                    _text(np.where(kinds == 1, "cta", "")),
                    _text(np.where(kinds == 1, "other", "")),
                    pa.StructArray.from_arrays([pa.array(np.where(kinds == 1, 1.0, 0.0))], names=["value"]),
                ],
                names=["name", "type", "linkClicks"],
            ),
        ],
        names=["webPageDetails", "webInteraction"],
        mask=pa.array(~is_web),
    )
    measure = lambda kind: pa.StructArray.from_arrays([pa.array(np.where(kinds == kind, 1.0, 0.0))], names=["value"])  # noqa: E731
    direct_marketing = pa.StructArray.from_arrays(
        [measure(2), measure(3), measure(4), _text(np.char.add("msg-", rng.integers(0, 200, rows).astype(str)))],
        names=["opens", "clicks", "sends", "messageID"],
        mask=pa.array(is_web),
    )
    return pa.table(
        {
            "_id": pa.array([uuid.UUID(int=int(i)).hex for i in rng.integers(0, 2**63, rows)]),
            "timestamp": timestamps,
            "eventType": _text(EVENT_TYPES[kinds]),
            f"_{tenant}": pa.StructArray.from_arrays([users], names=["userid"]),
            "web": web,
            "directMarketing": direct_marketing,
        }
    )


def parquet_parts(table: pa.Table, files: int) -> list[bytes]:
    size = -(-table.num_rows // files)
    parts = []
    for offset in range(0, table.num_rows, size):
        sink = io.BytesIO()
        pq.write_table(table.slice(offset, size), sink, compression="snappy")
        parts.append(sink.getvalue())
    return parts


def peak_rss(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def start_emulator(sandbox: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "AEP_EMULATOR_PORT": str(port),
        "AEP_QS_PORT": str(free_port()),
        "AEP_SANDBOXES": f"{','.join(get_settings().sandboxes)},{sandbox}",
        "AEP_STATE_LATENCY_S": "0",
        # Raw ingestion throughput: the gateway's call limits would measure the throttle instead.
        "AEP_THROTTLE": "false",
    }
    process = subprocess.Popen([sys.executable, "-m", "aep_emulator"], cwd=PROJECT_ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the emulator exited during start-up; is the local stack running?")
        try:
            if requests.get(f"{url}/_emulator/health", timeout=2).ok:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the emulator did not answer /_emulator/health within 60 s")


def setup_dataset(aep: AEPClient, tenant: str) -> str:
    """An ExperienceEvent schema (web, direct marketing, tenant userid) and its dataset."""
    suffix = uuid.uuid4().hex[:8]
    field_group = aep.post(
        "/data/foundation/schemaregistry/tenant/fieldgroups",
        json={
            "title": f"bench fg {suffix}",
            "type": "object",
            "meta:intendedToExtend": [EXPERIENCE_EVENT],
            "definitions": {
                "f": {"properties": {f"_{tenant}": {"type": "object", "properties": {"userid": {"type": "string"}}}}}
            },
            "allOf": [{"$ref": "#/definitions/f"}],
        },
    )
    field_group.raise_for_status()
    schema = aep.post(
        "/data/foundation/schemaregistry/tenant/schemas",
        json={
            "title": f"bench events {suffix}",
            "type": "object",
            "allOf": [
                {"$ref": EXPERIENCE_EVENT},
                {"$ref": WEB_FIELD_GROUP},
                {"$ref": DIRECT_MARKETING_FIELD_GROUP},
                {"$ref": field_group.json()["$id"]},
            ],
        },
    )
    schema.raise_for_status()
    dataset = aep.post(
        "/data/foundation/catalog/dataSets",
        json={"name": f"bench_events_{suffix}", "schemaRef": {"id": schema.json()["$id"]}},
    )
    dataset.raise_for_status()
    return dataset.json()[0].rsplit("/", 1)[1]


def run(aep: AEPClient, dataset_id: str, parts: list[bytes]) -> tuple[float, dict]:
    """PUT every part, COMPLETE, wait for a terminal status; return (seconds, batch)."""
    started = time.monotonic()
    batch = aep.post(
        "/data/foundation/import/batches", json={"datasetId": dataset_id, "inputFormat": {"format": "parquet"}}
    )
    batch.raise_for_status()
    batch_id = batch.json()["id"]

    def put(item: tuple[int, bytes]) -> None:
        index, data = item
        resp = aep.request(
            "PUT",
            f"/data/foundation/import/batches/{batch_id}/datasets/{dataset_id}/files/part-{index:05d}.parquet",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        resp.raise_for_status()

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(put, enumerate(parts)))
    aep.post(f"/data/foundation/import/batches/{batch_id}", params={"action": "COMPLETE"}).raise_for_status()
    while True:
        doc = aep.get(f"/data/foundation/catalog/batches/{batch_id}").json()[batch_id]
        if doc["status"] not in ("loading", "staging"):
            return time.monotonic() - started, doc
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4, help="Parquet files the rows are split into")
    parser.add_argument("--url", help="a running emulator; default: start one in a subprocess")
    parser.add_argument("--pid", type=int, help="process id of the --url emulator, to report its peak RSS")
    parser.add_argument("--sandbox", default=None, help="sandbox to use (default: a fresh one; with --url: dev)")
    args = parser.parse_args()

    settings = get_settings()
    sandbox = args.sandbox or ("dev" if args.url else f"bench{uuid.uuid4().hex[:6]}")
    process = None
    if args.url:
        url, pid = args.url, args.pid
    else:
        process, url = start_emulator(sandbox)
        pid = process.pid
    try:
        print(f"generating {args.rows} rows in {args.files} Parquet files ...", flush=True)
        parts = parquet_parts(event_table(args.rows, settings.tenant_id), args.files)
        print(f"{sum(len(p) for p in parts) / 1e6:.1f} MB of Parquet", flush=True)
        aep = AEPClient(url, settings, sandbox)
        dataset_id = setup_dataset(aep, settings.tenant_id)
        seconds, batch = run(aep, dataset_id, parts)
        rate = batch["metrics"].get("outputRecordCount", 0) / seconds
        print(
            f"status {batch['status']}: {batch['metrics']} in {seconds:.2f} s -> {rate:,.0f} rows/s "
            f"(target {TARGET_ROWS_PER_S:,})"
        )
        ok = batch["status"] == "success" and rate >= TARGET_ROWS_PER_S
        if pid:
            rss = peak_rss(pid)
            print(f"emulator peak RSS {rss / 2**20:.0f} MiB (target < {TARGET_RSS_BYTES / 2**20:.0f} MiB)")
            ok = ok and rss < TARGET_RSS_BYTES
        return 0 if ok else 1
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())

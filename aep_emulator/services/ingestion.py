"""Batch Ingestion (``/data/foundation/import``): create batches, upload files, COMPLETE/ABORT/REVERT.

Uploaded files go to the staging bucket under ``{sandbox}/{batchId}/{datasetId}/{filePath}``. COMPLETE
moves the batch to ``staging`` and a background load validates every file against the dataset's XDM
leaf fields and bulk-loads the valid rows with PostgreSQL ``COPY``. The rows, the replay of predecessor
batches and the final batch status commit in one transaction, so a failed batch loads nothing.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import math
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from aep_emulator import tables
from aep_emulator.db import quote_ident
from aep_emulator.errors import AEPError, problem_error
from aep_emulator.runtime import CallContext, Emulator, call_context, emulator
from aep_emulator.services.catalog import BATCH_KIND, DATASET_KIND, dataset_table, get_dataset
from aep_emulator.store import Store, new_id, now_ms
from aep_emulator.xdm import Field, XDMError, leaf_fields

log = logging.getLogger(__name__)

router = APIRouter(prefix="/data/foundation/import")

MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_FILES_PER_BATCH = 1500
FORMATS = ("json", "parquet", "csv")
IN_PROGRESS = ("loading", "staging")
ROWS_PER_CHUNK = 131_072
MAX_ROW_ERRORS_KEPT = 10_000
META_DIR = "_meta"

# Catalog error codes (docs/aep-behaviour.md#batches).
CODE_CORRUPT = "INGEST-1401-400"
CODE_REQUIRED = "INGEST-1555-400"
CODE_SUMMARY_DIAGNOSTICS = "INGEST-1212-400"
CODE_SUMMARY = "INGEST-1211-400"
CODE_EMPTY_FILE = "106"
# A replay whose predecessor is no longer active when it loads (emulator's code; AEP documents none).
CODE_REPLAY_CONFLICT = "INGEST-1409-409"

_ARROW_TYPES = {
    "string": pa.string(),
    "number": pa.float64(),
    "double": pa.float64(),
    "integer": pa.int64(),
    "long": pa.int64(),
    "int": pa.int32(),
    "short": pa.int16(),
    "byte": pa.int8(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "date-time": pa.timestamp("us", tz="UTC"),
    "array": pa.string(),
    "map": pa.string(),
}
_INT_RANGES = {"int": 2**31, "short": 2**15, "byte": 2**7, "long": 2**63, "integer": 2**63}


def bad_request(detail: str) -> AEPError:
    return problem_error(400, "BadRequestError", detail)


def not_found(detail: str) -> AEPError:
    return problem_error(404, "NotFoundError", detail)


def batch_prefix(sandbox: str, batch_id: str) -> str:
    """Staging-bucket prefix of everything a batch stored."""
    return f"{sandbox}/{batch_id}/"


def file_key(sandbox: str, batch_id: str, dataset_id: str, path: str) -> str:
    """Staging-bucket key of one uploaded batch file."""
    return f"{batch_prefix(sandbox, batch_id)}{dataset_id}/{path}"


def meta_key(sandbox: str, batch_id: str, name: str) -> str:
    """Staging-bucket key of a batch's diagnostics (``row_errors/...``)."""
    return f"{batch_prefix(sandbox, batch_id)}{META_DIR}/{name}"


@dataclass(frozen=True)
class StagedFile:
    """One uploaded file: its path inside the batch and its size."""

    dataset_id: str
    path: str
    key: str
    size: int


def list_staged_files(emu: Emulator, sandbox: str, batch_id: str) -> list[StagedFile]:
    """The files uploaded to a batch, sorted by dataset and path (diagnostics excluded)."""
    prefix = batch_prefix(sandbox, batch_id)
    found = []
    for page in emu.s3.get_paginator("list_objects_v2").paginate(Bucket=emu.settings.staging_bucket, Prefix=prefix):
        for obj in page.get("Contents", ()):
            dataset_id, _, path = obj["Key"][len(prefix) :].partition("/")
            if dataset_id != META_DIR:
                found.append(StagedFile(dataset_id, path, obj["Key"], obj["Size"]))
    return sorted(found, key=lambda f: (f.dataset_id, f.path))


def batch_dataset_id(batch: dict) -> str:
    return next(o["id"] for o in batch["relatedObjects"] if o["type"] == "dataSet")


def _set_last_batch(store: Store, sandbox: str, batch: dict) -> None:
    """Keep the dataset's ``lastBatchId``/``lastBatchStatus`` in step with its newest batch."""

    def update(dataset: dict) -> dict:
        if dataset.get("lastBatchId") in (None, batch["id"]) or batch["status"] == "loading":
            dataset["lastBatchId"] = batch["id"]
            dataset["lastBatchStatus"] = batch["status"]
        return dataset

    store.mutate(sandbox, DATASET_KIND, batch_dataset_id(batch), update)


# --- routes ---


def _parse_predecessors(emu: Emulator, sandbox: str, replay: Any, dataset_id: str) -> list[str]:
    if not isinstance(replay, dict) or not isinstance(replay.get("predecessors"), list):
        raise bad_request('replay must be {"predecessors": ["${batchId}", ...], "reason": "replace"}')
    ids = []
    for entry in replay["predecessors"]:
        if not isinstance(entry, str) or not entry.startswith("$"):
            raise bad_request(f"replay predecessor {entry!r} must be a batch id prefixed with '$', e.g. \"${entry}\"")
        predecessor = emu.store.get(sandbox, BATCH_KIND, entry[1:])
        if predecessor is None:
            raise bad_request(f"replay predecessor batch {entry[1:]} does not exist in this sandbox")
        if batch_dataset_id(predecessor) != dataset_id:
            raise bad_request(
                f"replay predecessor {entry[1:]} belongs to another dataset; replay only batches of {dataset_id}"
            )
        if predecessor["status"] not in ("success", "active"):
            raise bad_request(
                f"replay predecessor {entry[1:]} is {predecessor['status']}; only successful batches can be replaced"
            )
        ids.append(entry[1:])
    return ids


@router.post("/batches", status_code=201)
@router.post("/batches/", status_code=201, include_in_schema=False)
def create_batch(body: dict = Body(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    dataset_id = body.get("datasetId")
    if not isinstance(dataset_id, str) or get_dataset(emu, ctx.sandbox, dataset_id) is None:
        raise bad_request(
            f"datasetId {dataset_id!r} is not a dataset in sandbox {ctx.sandbox}; create the dataset first"
        )
    input_format = body.get("inputFormat")
    fmt = str((input_format or {}).get("format", "")).lower() if isinstance(input_format, dict) else ""
    if fmt not in FORMATS:
        raise bad_request(f"inputFormat.format must be one of {', '.join(FORMATS)} (case-insensitive)")
    percentage = body.get("partialIngestionPercentage", 0)
    if isinstance(percentage, bool) or not isinstance(percentage, (int, float)) or not 0 <= percentage <= 100:
        raise bad_request("partialIngestionPercentage must be a number from 0 (all or nothing) to 100")
    tags = body.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, list) for v in tags.values()):
        raise bad_request('tags must map each tag to a list of strings, e.g. {"run": ["2024-01-01"]}')
    batch_id = new_id()
    ts = now_ms()
    doc: dict[str, Any] = {
        "id": batch_id,
        "imsOrg": emu.settings.org_id,
        "status": "loading",
        "created": ts,
        "updated": ts,
        "createdClient": ctx.client_id,
        "createdUser": f"{ctx.client_id}@AdobeID",
        "updatedUser": f"{ctx.client_id}@AdobeID",
        "externalId": body.get("externalId") or batch_id,
        "relatedObjects": [{"type": "dataSet", "id": dataset_id}],
        "inputFormat": {"format": fmt, **({"isMultiLineJson": True} if input_format.get("isMultiLineJson") else {})},
        "tags": tags,
        "version": "1.0.0",
        "enableErrorDiagnostics": bool(body.get("enableErrorDiagnostics", False)),
        "partialIngestionPercentage": percentage,
        "metrics": {},
    }
    if "replay" in body:
        predecessors = _parse_predecessors(emu, ctx.sandbox, body["replay"], dataset_id)
        doc["replay"] = {"predecessors": predecessors, "reason": body["replay"].get("reason", "replace")}
    with emu.db.connection() as conn:
        store = tables.transactional_store(conn)
        store.insert(ctx.sandbox, BATCH_KIND, batch_id, doc)
        _set_last_batch(store, ctx.sandbox, doc)
    return JSONResponse(doc, status_code=201)


def _check_upload(emu: Emulator, sandbox: str, batch_id: str, dataset_id: str, file_path: str) -> tuple[str, bool]:
    """Check an upload target; return its staging key and whether a file is already there."""
    batch = emu.store.get(sandbox, BATCH_KIND, batch_id)
    if batch is None:
        raise not_found(f"batch {batch_id} does not exist in this sandbox")
    if batch_dataset_id(batch) != dataset_id or get_dataset(emu, sandbox, dataset_id) is None:
        raise not_found(f"dataset {dataset_id} is not the dataset of batch {batch_id}")
    if batch["status"] != "loading":
        raise bad_request(f"batch {batch_id} is {batch['status']}; files can only be uploaded while it is loading")
    if not file_path or file_path.startswith("/") or ".." in file_path.split("/"):
        raise bad_request(f"file path {file_path!r} is not valid; use a relative path such as part-0.parquet")
    key = file_key(sandbox, batch_id, dataset_id, file_path)
    existing = {f.key for f in list_staged_files(emu, sandbox, batch_id)}
    if key not in existing and len(existing) >= MAX_FILES_PER_BATCH:
        raise bad_request(f"batch {batch_id} already has {MAX_FILES_PER_BATCH} files, the limit; start another batch")
    return key, key in existing


def _too_large(size: int) -> AEPError:
    return bad_request(
        f"file is {size} bytes; uploads are limited to {MAX_FILE_BYTES} bytes (256 MB): split it into smaller files"
    )


@router.put("/batches/{batch_id}/datasets/{dataset_id}/files/{file_path:path}")
async def upload_file(
    batch_id: str,
    dataset_id: str,
    file_path: str,
    request: Request,
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/octet-stream":
        raise problem_error(
            415, "UnsupportedMediaType", "upload the raw file bytes with Content-Type: application/octet-stream"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_FILE_BYTES:
        raise _too_large(int(declared))
    key, exists = await asyncio.to_thread(_check_upload, emu, ctx.sandbox, batch_id, dataset_id, file_path)
    # Spool to disk past 8 MB so a 256 MB upload never sits in memory.
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise _too_large(size)
            spool.write(chunk)
        spool.seek(0)
        await asyncio.to_thread(emu.s3.upload_fileobj, spool, emu.settings.staging_bucket, key)
    # AEP answers 200 with an empty body, for a new file as for a replaced one; the spec also lists 201,
    # but Adobe's client (aepp, written against the live service) takes anything but 200 as an error.
    return Response(status_code=200)


@router.post("/batches/{batch_id}")
def batch_action(
    batch_id: str, action: str = Query(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    """COMPLETE (idempotent), ABORT (while not terminal) or REVERT (a successful batch).

    AEP documents a plain 200; the body is empty (docs/aep-behaviour.md#batches).
    """
    action = action.upper()
    handlers = {"COMPLETE": _complete, "ABORT": _abort, "REVERT": _revert}
    if action not in handlers:
        raise bad_request(f"action={action!r} is not supported; use COMPLETE, ABORT or REVERT")
    before: dict = {}

    def apply(doc: dict) -> dict:
        before.update(doc)
        return handlers[action](emu, conn, ctx.sandbox, doc)

    with emu.db.connection() as conn:
        store = tables.transactional_store(conn)
        batch = store.mutate(ctx.sandbox, BATCH_KIND, batch_id, apply)
        if batch is None:
            raise not_found(f"batch {batch_id} does not exist in this sandbox")
        _set_last_batch(store, ctx.sandbox, batch)
    # Only the COMPLETE that moved the batch out of loading starts its load: a repeated one is a no-op.
    if action == "COMPLETE" and before["status"] == "loading" and batch["status"] == "staging":
        emu.submit(load_batch, emu, ctx.sandbox, batch_id)
    return Response(status_code=200)


def _complete(emu: Emulator, conn: psycopg.Connection, sandbox: str, batch: dict) -> dict:
    if batch["status"] == "loading":
        ts = now_ms()
        return {**batch, "status": "staging", "started": ts, "updated": ts}
    if batch["status"] in ("staging", "success", "failed"):
        return batch  # COMPLETE is idempotent: repeating it changes nothing
    raise bad_request(f"batch {batch['id']} is {batch['status']}; only a loading batch can be completed")


def _abort(emu: Emulator, conn: psycopg.Connection, sandbox: str, batch: dict) -> dict:
    if batch["status"] not in IN_PROGRESS:
        raise bad_request(f"batch {batch['id']} is {batch['status']}; only a loading or staging batch can be aborted")
    ts = now_ms()
    return {**batch, "status": "aborted", "completed": ts, "updated": ts}


def _revert(emu: Emulator, conn: psycopg.Connection, sandbox: str, batch: dict) -> dict:
    if batch["status"] not in ("success", "active"):
        raise bad_request(f"batch {batch['id']} is {batch['status']}; only a successful batch can be reverted")
    dataset = get_dataset(emu, sandbox, batch_dataset_id(batch))
    if dataset is not None:
        try:
            tables.delete_batch_rows(conn, sandbox, dataset_table(dataset), [batch["id"]])
        except tables.TableError as exc:
            raise bad_request(str(exc)) from None
    return {**batch, "status": "inactive", "updated": now_ms()}


# --- loading ---


class LoadFailed(Exception):
    """The batch cannot be loaded; carries its Catalog ``errors[]``.

    :param errors: Catalog error items ``{code, description, ...}``.
    """

    def __init__(self, errors: list[dict]) -> None:
        super().__init__("; ".join(e["description"] for e in errors))
        self.errors = errors


@dataclass
class RowErrors:
    """Row-level failures of one batch, grouped by code and field, with a capped sample for diagnostics."""

    failed_rows: int = 0
    groups: dict[tuple[str, str], dict] = field(default_factory=dict)
    sample: list[dict] = field(default_factory=list)

    def add(self, code: str, description: str, file: str, row: int, value: Any = None) -> None:
        group = self.groups.setdefault(
            (code, description), {"code": code, "description": description, "rows": [], "recordCount": 0}
        )
        group["recordCount"] += 1
        if len(group["rows"]) < 20:
            group["rows"].append(f"{file}:{row}")
        if len(self.sample) < MAX_ROW_ERRORS_KEPT:
            entry = {"file": file, "row": row, "_errors": [{"code": code, "message": description}]}
            if value is not None:
                entry["value"] = str(value)[:200]
            self.sample.append(entry)


@dataclass
class LoadStats:
    input_rows: int = 0
    output_rows: int = 0
    row_errors: RowErrors = field(default_factory=RowErrors)


def _convert_one(xdm_type: str, value: Any) -> Any:
    """Coerce one value to an XDM type (docs/aep-behaviour.md#batches); raise ValueError when it cannot be.

    Strings coerce to numbers and dates; booleans never coerce, nor do numbers become booleans.
    """
    if isinstance(value, bool) and xdm_type != "boolean":
        raise ValueError("booleans never coerce to other types")
    if xdm_type == "boolean":
        if not isinstance(value, bool):
            raise ValueError("only true or false are accepted")
        return value
    if xdm_type in ("array", "map"):
        expected = list if xdm_type == "array" else dict
        if not isinstance(value, expected):
            raise ValueError(f"a JSON {'array' if expected is list else 'object'} is required")
        return json.dumps(value)
    if xdm_type == "string":
        if isinstance(value, (dict, list)):
            raise ValueError("objects and arrays do not coerce to strings")
        return value if isinstance(value, str) else str(value)
    if isinstance(value, (dict, list)):
        raise ValueError("objects and arrays do not coerce to scalars")
    if xdm_type in ("number", "double"):
        number = float(value)
        if math.isnan(number) and isinstance(value, str) and value.strip().lower() != "nan":
            raise ValueError("not a number")
        return number
    if xdm_type in _INT_RANGES:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float):
            if not number.is_integer():
                raise ValueError("not a whole number")
            number = int(value) if isinstance(value, str) and value.strip().lstrip("+-").isdigit() else int(number)
        limit = _INT_RANGES[xdm_type]
        if not -limit <= number < limit:
            raise ValueError(f"out of range for {xdm_type}")
        return number
    if xdm_type == "date-time":
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
            moment = datetime.fromtimestamp(int(value) / 1000, tz=UTC)  # epoch milliseconds
        else:
            moment = datetime.fromisoformat(str(value))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if xdm_type == "date":
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        return date.fromisoformat(str(value))
    raise ValueError(f"unsupported XDM type {xdm_type}")


def _type_error(f: Field, reason: str) -> str:
    return (
        f"TypeCompatibilityException: field '{f.path}' expects XDM type {f.xdm_type}: {reason}. "
        f"Fix: send {f.xdm_type} values for '{f.path}' (strings coerce to numbers and dates; booleans never coerce)"
    )


def _per_value(values: list, f: Field) -> tuple[pa.Array, np.ndarray, list[str]]:
    """Convert value by value; failed values become null and are reported."""
    converted, failed, reasons = [], np.zeros(len(values), dtype=bool), []
    for i, value in enumerate(values):
        if value is None:
            converted.append(None)
            continue
        try:
            converted.append(_convert_one(f.xdm_type, value))
        except (ValueError, TypeError, OverflowError) as exc:
            converted.append(None)
            failed[i] = True
            reasons.append(str(exc))
    return pa.array(converted, type=_ARROW_TYPES[f.xdm_type]), failed, reasons


def _vectorised(column: pa.ChunkedArray, f: Field) -> pa.ChunkedArray | None:
    """Arrow's own cast when the source type may coerce to the field's type; None when it may not."""
    source, target = column.type, _ARROW_TYPES[f.xdm_type]
    if f.xdm_type in ("array", "map"):
        return None
    if source == target:
        return column
    numeric = pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_decimal(source)
    text = pa.types.is_string(source) or pa.types.is_large_string(source)
    temporal = pa.types.is_timestamp(source) or pa.types.is_date(source)
    allowed = {
        "boolean": False,
        "string": text or numeric,
        "date-time": text or temporal or pa.types.is_integer(source),
        "date": text or temporal,
    }.get(f.xdm_type, text or numeric)  # numbers
    if not allowed:
        return None
    if f.xdm_type == "date-time" and pa.types.is_integer(source):
        return pc.cast(pc.cast(column, pa.timestamp("ms", tz="UTC")), target)  # epoch milliseconds
    return pc.cast(column, target)


def _coerce(column: pa.ChunkedArray, f: Field) -> tuple[pa.ChunkedArray | pa.Array, np.ndarray | None, list[str]]:
    """The column as the field's Arrow type, the mask of rows that failed, and why."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), _ARROW_TYPES[f.xdm_type]), None, []
    try:
        cast = _vectorised(column, f)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        cast = None  # some values do not convert: find which, value by value
    else:
        if cast is not None:
            return cast, None, []
    source_is_bool = pa.types.is_boolean(column.type)
    if source_is_bool and f.xdm_type != "boolean" or (f.xdm_type == "boolean" and not source_is_bool):
        failed = ~pc.is_null(column).to_numpy(zero_copy_only=False)
        reason = "booleans never coerce to other types" if source_is_bool else "only true or false are accepted"
        return pa.nulls(len(column), _ARROW_TYPES[f.xdm_type]), failed, [reason] * int(failed.sum())
    return _per_value(column.to_pylist(), f)


def _check_columns(names: list[str], fields: dict[str, Field], file: str) -> None:
    unknown = [n for n in names if n not in fields]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if unknown or duplicated:
        problems = []
        if unknown:
            problems.append(f"unknown field(s) {', '.join(repr(n) for n in unknown[:10])} not in the dataset's schema")
        if duplicated:
            problems.append(f"field(s) {', '.join(duplicated)} appear more than once")
        raise LoadFailed(
            [
                {
                    "code": CODE_CORRUPT,
                    "description": f"File {file}: {'; '.join(problems)}. Fix: send only the schema's fields "
                    f"(nested objects or dotted leaf paths such as {next(iter(fields))!r})",
                }
            ]
        )


Column = pa.ChunkedArray | list  # Arrow data (Parquet, CSV) or decoded JSON values


def _convert_column(
    source: Column, f: Field
) -> tuple[pa.ChunkedArray | pa.Array, np.ndarray | None, list[str], np.ndarray]:
    """``(converted, failed mask or None, failure reasons, null mask)`` of one source column."""
    if isinstance(source, list):
        column, bad, reasons = _per_value(source, f)
        return column, bad, reasons, np.fromiter((v is None for v in source), dtype=bool, count=len(source))
    if f.xdm_type in ("array", "map"):
        column, bad, reasons = _per_value(source.to_pylist(), f)
    else:
        column, bad, reasons = _coerce(source, f)
    return column, bad, reasons, pc.is_null(source).to_numpy(zero_copy_only=False)


def _conform(
    columns: dict[str, Column], rows: int, fields: list[Field], file: str, first_row: int, stats: LoadStats
) -> pa.Table:
    """Validate one chunk; return its valid rows with the dataset's columns in schema order.

    :param columns: the chunk's columns by dotted leaf path.
    :param rows: number of rows in the chunk.
    :param fields: the dataset's leaf fields.
    :param file: file name, for error messages.
    :param first_row: number of rows of the file before this chunk.
    :param stats: counters and row errors of the load.
    """
    failed = np.zeros(rows, dtype=bool)
    out = []
    for f in fields:
        source = columns.get(f.path)
        if source is None:
            column, bad, reasons, nulls = pa.nulls(rows, _ARROW_TYPES[f.xdm_type]), None, [], np.ones(rows, dtype=bool)
        else:
            column, bad, reasons, nulls = _convert_column(source, f)
        if bad is not None and bad.any():
            values = source if isinstance(source, list) else source.to_pylist()
            for index, reason in zip(np.flatnonzero(bad), reasons, strict=True):
                stats.row_errors.add(
                    CODE_CORRUPT, _type_error(f, reason), file, first_row + int(index) + 1, values[index]
                )
            failed |= bad
        if f.required and nulls.any():
            for index in np.flatnonzero(nulls):
                stats.row_errors.add(
                    CODE_REQUIRED,
                    f"Required field '{f.path}' is missing. Fix: give every record a {f.xdm_type} value for '{f.path}'",
                    file,
                    first_row + int(index) + 1,
                )
            failed |= nulls
        out.append(column)
    stats.input_rows += rows
    stats.row_errors.failed_rows += int(failed.sum())
    table = pa.Table.from_arrays(out, names=[f.path for f in fields])
    return table.filter(pa.array(~failed)) if failed.any() else table


def _json_rows(data: bytes, multi_line: bool, file: str, stats: LoadStats) -> Iterator[list[dict]]:
    """Records of a JSON Lines file, or of a JSON array when ``isMultiLineJson`` is set, in chunks."""
    if multi_line:
        try:
            records = json.loads(data)
        except ValueError as exc:
            raise LoadFailed([{"code": CODE_CORRUPT, "description": f"File {file} is not valid JSON: {exc}"}]) from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise LoadFailed(
                [
                    {
                        "code": CODE_CORRUPT,
                        "description": f"File {file}: with isMultiLineJson the file must be a JSON array of objects",
                    }
                ]
            )
        for start in range(0, len(records), ROWS_PER_CHUNK):
            yield records[start : start + ROWS_PER_CHUNK]
        return
    if data.lstrip().startswith(b"["):
        raise LoadFailed(
            [
                {
                    "code": CODE_CORRUPT,
                    "description": f"File {file} is a JSON array; send JSON Lines (one object per line) "
                    "or create the batch with inputFormat.isMultiLineJson true",
                }
            ]
        )
    chunk: list[dict] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("a line must hold one JSON object")
        except ValueError as exc:
            stats.input_rows += 1
            stats.row_errors.failed_rows += 1
            stats.row_errors.add(
                CODE_CORRUPT, f"Corrupted record: {exc}. Fix: one JSON object per line", file, number, line[:200]
            )
            continue
        chunk.append(record)
        if len(chunk) == ROWS_PER_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _flatten_record(record: dict, fields: dict[str, Field], prefix: str = "") -> dict:
    """A JSON record as ``{dotted leaf path: value}``; map and array leaves stay whole."""
    flat = {}
    for key, value in record.items():
        path = prefix + key
        if isinstance(value, dict) and path not in fields:
            flat.update(_flatten_record(value, fields, path + "."))
        else:
            flat[path] = value
    return flat


def _flatten_table(table: pa.Table, fields: dict[str, Field]) -> list[tuple[str, pa.ChunkedArray]]:
    """Nested struct columns as dotted leaf-path columns (``web`` -> ``web.webPageDetails.URL``)."""
    flat: list[tuple[str, pa.ChunkedArray]] = []
    pending = list(zip(table.column_names, table.columns, strict=True))
    while pending:
        name, column = pending.pop(0)
        if pa.types.is_struct(column.type) and name not in fields:
            pending[:0] = [
                (f"{name}.{child.name}", values) for child, values in zip(column.type, column.flatten(), strict=True)
            ]
        else:
            flat.append((name, column))
    return flat


def _csv_chunks(path: str) -> Iterator[pa.Table]:
    """A CSV file with a header row, every column read as text (values coerce per field later)."""
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise LoadFailed(
            [{"code": "118", "description": "CSV header row is empty. Fix: the first row must name the fields"}]
        )
    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=16 << 20),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=True
        ),
    )
    for record_batch in reader:
        yield pa.Table.from_batches([record_batch])


def _chunks(
    emu: Emulator, staged: StagedFile, batch: dict, fields: dict[str, Field], stats: LoadStats
) -> Iterator[tuple[dict[str, Column], int]]:
    """The file's records chunk by chunk as ``({leaf path: column}, rows)``; the file is never held
    whole as Python objects (JSON excepted, whose records are parsed anyway)."""
    if staged.size == 0:
        raise LoadFailed(
            [
                {
                    "code": CODE_EMPTY_FILE,
                    "description": f"Dataset file is empty: {staged.path}. Fix: upload a file with records",
                }
            ]
        )
    fmt = batch["inputFormat"]["format"]
    with tempfile.NamedTemporaryFile(suffix="." + fmt) as local:
        emu.s3.download_fileobj(emu.settings.staging_bucket, staged.key, local)
        local.flush()
        try:
            if fmt == "json":
                local.seek(0)
                multi_line = bool(batch["inputFormat"].get("isMultiLineJson"))
                for records in _json_rows(local.read(), multi_line, staged.path, stats):
                    flat = [_flatten_record(r, fields) for r in records]
                    names = list(dict.fromkeys(k for r in flat for k in r))
                    _check_columns(names, fields, staged.path)
                    yield {n: [r.get(n) for r in flat] for n in names}, len(flat)
                return
            if fmt == "parquet":
                parquet = pq.ParquetFile(local.name)
                if parquet.metadata.num_rows == 0:
                    raise LoadFailed(
                        [{"code": CODE_EMPTY_FILE, "description": f"Dataset file is empty: {staged.path} has no rows"}]
                    )
                tables_ = (pa.Table.from_batches([b]) for b in parquet.iter_batches(batch_size=ROWS_PER_CHUNK))
            else:
                tables_ = _csv_chunks(local.name)
            for table in tables_:
                flat_columns = _flatten_table(table, fields)
                _check_columns([n for n, _ in flat_columns], fields, staged.path)
                yield dict(flat_columns), table.num_rows
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
            raise LoadFailed(
                [
                    {
                        "code": CODE_CORRUPT,
                        "description": f"File {staged.path} cannot be read as {fmt}: {exc}. Fix: upload a valid {fmt} file",
                    }
                ]
            ) from None


def _csv_bytes(table: pa.Table) -> pa.Buffer:
    """COPY CSV of a conformed chunk.

    UTC timestamps are written without their zone (the load runs with ``TimeZone=UTC``): Arrow formats
    naive timestamps about 40 times faster than zoned ones.
    """
    columns = [pc.cast(c, pa.timestamp(c.type.unit)) if pa.types.is_timestamp(c.type) else c for c in table.columns]
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(
        pa.Table.from_arrays(columns, names=table.column_names),
        sink,
        pa_csv.WriteOptions(include_header=False, quoting_style="needed"),
    )
    return sink.getvalue()


def _encoded_chunks(
    emu: Emulator, batch: dict, files: list[StagedFile], fields: list[Field], stats: LoadStats
) -> Iterator[pa.Buffer]:
    """The batch's valid rows, file by file and chunk by chunk, as COPY CSV with the system columns."""
    by_path = {f.path: f for f in fields}
    batch_id = pa.scalar(batch["id"])
    ingest_time = pa.scalar(now_ms(), pa.int64())
    for staged in files:
        rows_before = 0
        for columns, rows in _chunks(emu, staged, batch, by_path, stats):
            valid = _conform(columns, rows, fields, staged.path, rows_before, stats)
            rows_before += rows
            if valid.num_rows:
                n = valid.num_rows
                valid = valid.append_column(tables.BATCH_ID_COLUMN, pa.repeat(batch_id, n))
                valid = valid.append_column(tables.INGEST_TIME_COLUMN, pa.repeat(ingest_time, n))
                stats.output_rows += n
                yield _csv_bytes(valid)


_DONE = object()


def _in_background(items: Iterator, depth: int = 2) -> Iterator:
    """Iterate ``items`` in a helper thread, ``depth`` items ahead of the caller; re-raise its errors.

    When the caller stops early (its COPY failed), the helper is told to stop and is joined.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    worker = threading.Thread(target=produce, name="aep-emu-load-reader", daemon=True)
    worker.start()
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _copy_rows(
    emu: Emulator, conn: psycopg.Connection, sandbox: str, batch: dict, dataset: dict, stats: LoadStats
) -> None:
    """Validate every file of the batch and COPY its valid rows into the dataset table.

    :param stats: filled with the counts and row errors, also when the load fails.

    :raises LoadFailed: on a file-level problem, or when more rows fail than the batch allows.
    """
    try:
        fields = leaf_fields(emu, sandbox, dataset["schemaRef"]["id"])
    except XDMError as exc:
        raise LoadFailed(
            [{"code": CODE_CORRUPT, "description": f"The dataset's schema cannot be resolved: {exc}"}]
        ) from None
    by_path = {f.path: f for f in fields}
    files = [f for f in list_staged_files(emu, sandbox, batch["id"]) if f.dataset_id == dataset["id"]]
    if not files:
        raise LoadFailed(
            [{"code": CODE_EMPTY_FILE, "description": "The batch has no files. Fix: upload files before COMPLETE"}]
        )
    names = ", ".join(quote_ident(n) for n in [*by_path, *tables.SYSTEM_COLUMNS])
    target = tables.qualified(sandbox, dataset_table(dataset))
    try:
        tables.check_inert(conn, sandbox, dataset_table(dataset))
    except tables.TableError as exc:
        raise LoadFailed([{"code": CODE_CORRUPT, "description": str(exc)}]) from None
    conn.execute("SET LOCAL TIME ZONE 'UTC'")
    encoded = _encoded_chunks(emu, batch, files, fields, stats)
    with conn.cursor() as cur, cur.copy(f"COPY {target} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
        # Reading, validating and encoding run in a helper thread while PostgreSQL parses the COPY.
        for data in _in_background(encoded):
            copy.write(memoryview(data))
    failed = stats.row_errors.failed_rows
    if failed and failed * 100 > batch.get("partialIngestionPercentage", 0) * max(stats.input_rows, 1):
        raise LoadFailed(_row_error_summary(batch, stats))


def _row_error_summary(batch: dict, stats: LoadStats) -> list[dict]:
    failed = stats.row_errors.failed_rows
    diagnostics = batch.get("enableErrorDiagnostics")
    loaded = stats.input_rows - failed
    summary = {
        "code": CODE_SUMMARY_DIAGNOSTICS if diagnostics else CODE_SUMMARY,
        "description": f"Encountered {failed} errors in the data. Successfully ingested {loaded} rows. "
        + (
            "Review the row errors through Data Access /batches/{id}/meta?path=row_errors"
            if diagnostics
            else "Create the batch with enableErrorDiagnostics true to keep the row errors"
        ),
        "recordCount": failed,
    }
    return [summary, *stats.row_errors.groups.values()]


def _write_diagnostics(emu: Emulator, sandbox: str, batch: dict, stats: LoadStats) -> None:
    if not batch.get("enableErrorDiagnostics") or not stats.row_errors.sample:
        return
    body = "\n".join(json.dumps({**e, "batchId": batch["id"]}) for e in stats.row_errors.sample).encode()
    emu.s3.put_object(
        Bucket=emu.settings.staging_bucket, Key=meta_key(sandbox, batch["id"], "row_errors/part-00000.json"), Body=body
    )


def load_batch(emu: Emulator, sandbox: str, batch_id: str) -> None:
    """Load a staging batch: validate, COPY, replay, and set its final status, in one transaction.

    :param emu: the running emulator.
    :param sandbox: the batch's sandbox.
    :param batch_id: the batch to load.
    """
    batch = emu.store.get(sandbox, BATCH_KIND, batch_id)
    if batch is None or batch["status"] != "staging":
        return
    # A batch stays in staging at least state_latency_s, as AEP's do for a while.
    time.sleep(max(0.0, emu.settings.state_latency_s - (now_ms() - batch.get("started", now_ms())) / 1000))
    with emu.db.connection() as conn:
        store = tables.transactional_store(conn)
        locked: dict = {}
        # Lock the batch row for the whole load: a concurrent ABORT or a second loader waits, then sees the result.
        store.mutate(sandbox, BATCH_KIND, batch_id, lambda doc: locked.update(doc) or doc)
        if locked.get("status") != "staging":
            return
        batch = locked
        dataset = get_dataset(emu, sandbox, batch_dataset_id(batch))
        files = list_staged_files(emu, sandbox, batch_id)
        stats, errors = LoadStats(), []
        try:
            with conn.transaction():  # savepoint: rows and replay succeed or vanish together
                if emu.faults.take_forced_failure("batch"):
                    raise LoadFailed(
                        [
                            {
                                "code": CODE_CORRUPT,
                                "description": "Batch failed by fault injection (force_failures.batch)",
                            }
                        ]
                    )
                if dataset is None:
                    raise LoadFailed(
                        [{"code": CODE_CORRUPT, "description": "The batch's dataset was deleted before the load"}]
                    )
                _copy_rows(emu, conn, sandbox, batch, dataset, stats)
                _replay(conn, store, sandbox, batch, dataset)
            status = "success"
            if stats.row_errors.failed_rows:
                errors = _row_error_summary(batch, stats)
        except LoadFailed as exc:
            status, errors = "failed", exc.errors
        except psycopg.errors.DataError as exc:
            # PostgreSQL rejected a value the checks let through (e.g. a date out of range).
            status = "failed"
            errors = [
                {
                    "code": CODE_CORRUPT,
                    "description": f"A value could not be stored: {exc.diag.message_primary} ({exc.diag.context})",
                }
            ]
        except Exception as exc:
            # Fail the batch rather than leave it in staging for ever; the log has the traceback.
            log.exception("loading batch %s failed unexpectedly", batch_id)
            status, errors = "failed", [{"code": CODE_CORRUPT, "description": f"Internal error while loading: {exc}"}]
        _write_diagnostics(emu, sandbox, batch, stats)
        ts = now_ms()
        batch.update(
            {
                "status": status,
                "completed": ts,
                "updated": ts,
                "metrics": {
                    "inputRecordCount": stats.input_rows,
                    "outputRecordCount": stats.output_rows if status == "success" else 0,
                    "failedRecordCount": stats.row_errors.failed_rows,
                    "inputFileCount": len(files),
                    "inputByteSize": sum(f.size for f in files),
                },
            }
        )
        if errors:
            batch["errors"] = errors
        store.update(sandbox, BATCH_KIND, batch_id, batch)
        _set_last_batch(store, sandbox, batch)
    log.info("batch %s in %s: %s, %s rows loaded", batch_id, sandbox, status, batch["metrics"]["outputRecordCount"])


def _replay(conn: psycopg.Connection, store: Store, sandbox: str, batch: dict, dataset: dict) -> None:
    """Retire the batch's predecessors: their rows go and they become inactive.

    Each predecessor is retired only if it is still active, under its row lock and in the load's
    transaction: of two replays of one batch completed together, the second waits for the first
    and then fails, so the date's rows are replaced once, never doubled.

    :raises LoadFailed: a predecessor was meanwhile replaced, reverted or deleted.
    """
    predecessors = (batch.get("replay") or {}).get("predecessors", [])
    # Documents first, rows second: the order REVERT takes its locks in, so the two cannot deadlock.
    for predecessor in predecessors:

        def retire(doc: dict, predecessor: str = predecessor) -> dict:
            if doc["status"] not in ("success", "active"):
                raise _replay_conflict(batch, predecessor, f"is {doc['status']}")
            return {**doc, "status": "inactive", "updated": now_ms()}

        if store.mutate(sandbox, BATCH_KIND, predecessor, retire) is None:
            raise _replay_conflict(batch, predecessor, "no longer exists")
    try:
        tables.delete_batch_rows(conn, sandbox, dataset_table(dataset), predecessors)
    except tables.TableError as exc:
        raise LoadFailed([{"code": CODE_CORRUPT, "description": str(exc)}]) from None


def _replay_conflict(batch: dict, predecessor: str, state: str) -> LoadFailed:
    return LoadFailed(
        [
            {
                "code": CODE_REPLAY_CONFLICT,
                "description": f"Replay predecessor batch {predecessor} {state}: another batch replaced it or it "
                f"was reverted after batch {batch['id']} was created. Nothing was loaded; replay the batch that "
                "is now active instead",
            }
        ]
    )


def recover(emu: Emulator) -> None:
    """Resume the loads of batches a restart left in ``staging``."""
    for sandbox, batch in emu.store.list_all_sandboxes(BATCH_KIND):
        if sandbox in emu.settings.sandboxes and batch["status"] == "staging":
            log.info("resuming the load of batch %s in %s", batch["id"], sandbox)
            emu.submit(load_batch, emu, sandbox, batch["id"])

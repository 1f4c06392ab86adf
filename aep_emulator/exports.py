"""Files the Flow Service writes to a destination bucket: dataset exports and audience activations.

Dataset exports stream the dataset's table through a server-side cursor into Parquet (or JSON lines)
parts. Like AEP's, exported records are **nested**: the dotted column ``_acme.userid`` becomes the
field ``userid`` of the struct ``_acme`` (``pyarrow.Table.flatten()`` gives the dotted names back).
Audience activations write one CSV per audience and run from the members a segment job stored.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aep_emulator import tables
from aep_emulator.db import quote_ident, sandbox_schema
from aep_emulator.runtime import Emulator
from aep_emulator.services.segmentation import iter_members, table_columns

# Rows fetched per round trip, and rows per part file before a new part starts.
FETCH_ROWS = 50_000
ROWS_PER_PART = 1_000_000

_ARROW_TYPES = {
    "text": pa.string(),
    "double precision": pa.float64(),
    "real": pa.float32(),
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "smallint": pa.int16(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp without time zone": pa.timestamp("us"),
    "numeric": pa.float64(),
}


class ExportError(RuntimeError):
    """The export cannot be written (unknown table, bad target parameters)."""


@dataclass
class ExportResult:
    """What a run wrote: object keys, their total size and the record count."""

    keys: list[str] = field(default_factory=list)
    output_bytes: int = 0
    records: int = 0


def _arrow_type(pg_type: str) -> pa.DataType:
    # jsonb (arrays, maps) and anything unusual travel as JSON / text.
    return _ARROW_TYPES.get(pg_type, pa.string())


def _to_arrow_values(values: list, pg_type: str) -> list:
    if pg_type in ("jsonb", "json"):
        return [None if v is None else json.dumps(v) for v in values]
    if pg_type == "numeric":
        return [None if v is None else float(v) for v in values]
    if pg_type not in _ARROW_TYPES:
        return [None if v is None else str(v) for v in values]
    return values


def _nest(names: list[str], arrays: list[pa.Array]) -> tuple[list[str], list[pa.Array]]:
    """Group dotted leaf columns into struct columns (``a.b``, ``a.c`` → ``a{b,c}``)."""
    groups: dict[str, list[tuple[str, pa.Array]]] = {}
    for name, array in zip(names, arrays, strict=True):
        head, _, rest = name.partition(".")
        groups.setdefault(head, []).append((rest, array))
    out_names, out_arrays = [], []
    for head, members in groups.items():
        out_names.append(head)
        if len(members) == 1 and members[0][0] == "":
            out_arrays.append(members[0][1])
        else:
            child_names, child_arrays = _nest([m[0] for m in members], [m[1] for m in members])
            out_arrays.append(pa.StructArray.from_arrays(child_arrays, names=child_names))
    return out_names, out_arrays


def _part_name(index: int, suffix: str) -> str:
    """A Spark-style part name, e.g. ``part-00000-tid-4637…-<uuid>-1234-1-c000.gz.parquet``."""
    return f"part-{index:05d}-tid-{random.randrange(10**18, 10**19)}-{uuid.uuid4()}-{random.randrange(1000, 9999)}-1-c000{suffix}"


def _iter_tables(emu: Emulator, sandbox: str, table: str, columns: dict[str, str]) -> Iterator[pa.Table]:
    """The table's XDM columns as nested Arrow tables of up to FETCH_ROWS rows."""
    names = list(columns)
    select = ", ".join(quote_ident(c) for c in names)
    with emu.db.connection() as conn, conn.cursor(name=f"export_{uuid.uuid4().hex}") as cur:
        try:
            tables.check_inert(conn, sandbox, table)
        except tables.TableError as exc:
            raise ExportError(str(exc)) from None
        cur.execute(f"SELECT {select} FROM {sandbox_schema(sandbox)}.{quote_ident(table)}")
        while True:
            rows = cur.fetchmany(FETCH_ROWS)
            arrays = [
                pa.array(_to_arrow_values([row[i] for row in rows], columns[name]), type=_arrow_type(columns[name]))
                for i, name in enumerate(names)
            ]
            nested_names, nested_arrays = _nest(names, arrays)
            yield pa.Table.from_arrays(nested_arrays, names=nested_names)
            if len(rows) < FETCH_ROWS:
                return


class _PartWriter:
    """Writes parts to temporary files and uploads each finished part."""

    def __init__(self, emu: Emulator, bucket: str, prefix: str, file_type: str, gzipped: bool) -> None:
        self.emu, self.bucket, self.prefix = emu, bucket, prefix.strip("/")
        self.file_type, self.gzipped = file_type, gzipped
        self.result = ExportResult()
        self._path: str | None = None
        self._writer: Any = None
        self._rows_in_part = 0

    def write(self, table: pa.Table) -> None:
        if self._path is None:
            self._open(table.schema)
        if self.file_type == "PARQUET":
            self._writer.write_table(table)
        else:
            for record in table.to_pylist():
                self._writer.write((json.dumps(record, default=str) + "\n").encode())
        self._rows_in_part += table.num_rows
        self.result.records += table.num_rows
        if self._rows_in_part >= ROWS_PER_PART:
            self.close_part()

    def _open(self, schema: pa.Schema) -> None:
        fd, self._path = tempfile.mkstemp(prefix="aep-export-")
        os.close(fd)
        if self.file_type == "PARQUET":
            self._writer = pq.ParquetWriter(self._path, schema, compression="gzip" if self.gzipped else "none")
        else:
            self._writer = gzip.open(self._path, "wb") if self.gzipped else open(self._path, "wb")
        self._rows_in_part = 0

    def close_part(self) -> None:
        if self._path is None:
            return
        self._writer.close()
        suffix = {
            ("PARQUET", True): ".gz.parquet",
            ("PARQUET", False): ".parquet",
            ("JSON", True): ".json.gz",
            ("JSON", False): ".json",
        }[(self.file_type, self.gzipped)]
        key = f"{self.prefix}/{_part_name(len(self.result.keys), suffix)}"
        try:
            self.emu.s3.upload_file(self._path, self.bucket, key)
            self.result.output_bytes += os.path.getsize(self._path)
            self.result.keys.append(key)
        finally:
            os.unlink(self._path)
            self._path = None


def export_dataset(
    emu: Emulator, sandbox: str, table: str, bucket: str, prefix: str, *, file_type: str, compression: str
) -> ExportResult:
    """Write a dataset's table (XDM columns only, no system columns) as parts under ``prefix``.

    :param table: the dataset's Query Service table name.
    :param bucket: destination bucket.
    :param prefix: key prefix, e.g. ``exports/{datasetId}/exportTime=202501311200``.
    :param file_type: ``PARQUET`` or ``JSON``.
    :param compression: ``GZIP`` or ``NONE``.
    """
    file_type, compression = file_type.upper(), compression.upper()
    if file_type not in ("PARQUET", "JSON") or compression not in ("GZIP", "NONE"):
        raise ExportError(f"unsupported export format {file_type}/{compression}")
    with emu.db.connection() as conn:
        columns = table_columns(conn, sandbox_schema(sandbox), table)
    if not columns:
        raise ExportError(f"table {table} of sandbox {sandbox} does not exist")
    writer = _PartWriter(emu, bucket, prefix, file_type, compression == "GZIP")
    try:
        for chunk in _iter_tables(emu, sandbox, table, columns):
            writer.write(chunk)
    finally:
        writer.close_part()
    return writer.result


def _csv_value(value: Any, null_value: str, empty_value: str) -> str:
    if value is None:
        return null_value
    if value == "":
        return empty_value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def write_audience_csv(
    emu: Emulator,
    sandbox: str,
    job_id: str,
    segment_id: str,
    bucket: str,
    key: str,
    *,
    namespaces: list[str],
    attributes: list[str],
    csv_options: dict,
    gzipped: bool,
) -> ExportResult:
    """Write an audience's members (one identity column per namespace, then the selected attributes).

    :param job_id: the segment job whose stored members are exported.
    :param key: the object key of the CSV.
    :param namespaces: identity namespace codes; each becomes a column named after the code.
    :param attributes: profile attribute paths (the flow's profile selectors).
    :param csv_options: the target connection's ``csvOptions``.
    """
    quote = csv_options.get("quote", '"')
    null_value = csv_options.get("nullValue", "null")
    empty_value = csv_options.get("emptyValue", "")
    result = ExportResult()
    fd, path = tempfile.mkstemp(prefix="aep-activation-")
    os.close(fd)
    try:
        raw = gzip.open(path, "wb") if gzipped else open(path, "wb")
        with io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            writer = csv.writer(
                text,
                delimiter=csv_options.get("delimiter", ","),
                quotechar=quote or None,
                quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
                escapechar=csv_options.get("escape", "\\"),
            )
            writer.writerow([*namespaces, *attributes])
            for chunk in iter_members(emu, sandbox, job_id, segment_id):
                for namespace, identity, values in chunk:
                    identities = [identity if ns == namespace else null_value for ns in namespaces]
                    writer.writerow(
                        [*identities, *(_csv_value(values.get(a), null_value, empty_value) for a in attributes)]
                    )
                result.records += len(chunk)
        emu.s3.upload_file(path, bucket, key)
        result.output_bytes = os.path.getsize(path)
        result.keys.append(key)
    finally:
        os.unlink(path)
    return result

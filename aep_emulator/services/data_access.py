"""Data Access (``/data/foundation/export``): a batch's files, their bytes, and its failure diagnostics.

Each successful batch exposes one dataset file, ``{batchId}-1``, listing the files uploaded to it.
The bytes served are the uploaded ones, read from the staging bucket (AEP serves its own Parquet
conversion; the emulator keeps the upload as it came).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import quote

from botocore.exceptions import ClientError
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from aep_emulator.errors import AEPError, problem_error
from aep_emulator.runtime import CallContext, Emulator, call_context, emulator
from aep_emulator.services.catalog import BATCH_KIND, get_dataset
from aep_emulator.services.ingestion import (
    META_DIR,
    StagedFile,
    batch_dataset_id,
    batch_prefix,
    list_staged_files,
    meta_key,
)

router = APIRouter(prefix="/data/foundation/export")

PAGE_LIMIT = 100
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTENT_TYPES = {".parquet": "application/parquet", ".json": "application/json", ".csv": "text/csv"}


def not_found(detail: str) -> AEPError:
    return problem_error(404, "NotFoundError", detail)


def _batch(emu: Emulator, sandbox: str, batch_id: str) -> dict:
    batch = emu.store.get(sandbox, BATCH_KIND, batch_id)
    if batch is None:
        raise not_found(f"batch {batch_id} does not exist in this sandbox")
    return batch


def _page(request: Request, items: list[dict]) -> dict:
    """One page of a listing (``start``/``limit``), with ``_links.next`` only when more remain."""
    try:
        start = int(request.query_params.get("start", 0))
        limit = min(int(request.query_params.get("limit", PAGE_LIMIT)), PAGE_LIMIT)
    except ValueError:
        raise problem_error(400, "BadRequestError", "start and limit must be integers") from None
    page = items[start : start + max(limit, 1)]
    body = {"data": page, "_page": {"limit": limit, "count": len(page)}, "_links": {}}
    if start + len(page) < len(items):
        body["_links"]["next"] = {"href": str(request.url.include_query_params(start=start + len(page)))}
    return body


def _file_entries(request: Request, files: list[StagedFile], href_base: str) -> list[dict]:
    return [
        {"name": f.path, "length": str(f.size), "_links": {"self": {"href": f"{href_base}?path={quote(f.path)}"}}}
        for f in files
    ]


def _content(emu: Emulator, request: Request, key: str, name: str) -> Response:
    """The bytes of a staging object; a ``Range: bytes=a-b`` header gives 206 and ``Content-Range``."""
    try:
        head = emu.s3.head_object(Bucket=emu.settings.staging_bucket, Key=key)
    except ClientError:
        raise not_found(f"file {name} does not exist") from None
    size = head["ContentLength"]
    headers = {"Accept-Ranges": "bytes"}
    media_type = _CONTENT_TYPES.get(PurePosixPath(name).suffix, "application/octet-stream")
    if request.method == "HEAD":
        return Response(headers={**headers, "Content-Length": str(size)}, media_type=media_type)
    wanted = request.headers.get("range")
    status, extra = 200, {}
    if wanted:
        match = _RANGE.match(wanted.strip())
        first, last = (match.group(1), match.group(2)) if match else ("", "")
        if match is None or (not first and not last):
            raise AEPError(
                416,
                {"message": f"Range {wanted!r} is not valid; use e.g. bytes=0-99"},
                {"Content-Range": f"bytes */{size}"},
            )
        start, end = (
            (int(first), min(int(last or size - 1), size - 1)) if first else (max(size - int(last), 0), size - 1)
        )
        if start >= size or start > end:
            raise AEPError(
                416,
                {"message": f"Range {wanted!r} is outside the file's {size} bytes"},
                {"Content-Range": f"bytes */{size}"},
            )
        extra = {"Range": f"bytes={start}-{end}"}
        status = 206
        headers.update({"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1)})
    else:
        headers["Content-Length"] = str(size)
    body = emu.s3.get_object(Bucket=emu.settings.staging_bucket, Key=key, **extra)["Body"]
    return StreamingResponse(body.iter_chunks(1 << 20), status_code=status, headers=headers, media_type=media_type)


@router.get("/batches/{batch_id}/files")
def batch_files(
    batch_id: str, request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    batch = _batch(emu, ctx.sandbox, batch_id)
    items = []
    # Only a successful batch's data is part of its dataset.
    if batch["status"] in ("success", "active"):
        dataset = get_dataset(emu, ctx.sandbox, batch_dataset_id(batch)) or {}
        file_id = f"{batch_id}-1"
        files = list_staged_files(emu, ctx.sandbox, batch_id)
        items.append(
            {
                "dataSetFileId": file_id,
                "dataSetViewId": dataset.get("viewId", ""),
                "version": "1.0.0",
                "created": str(batch["created"]),
                "updated": str(batch["updated"]),
                "records": str(batch.get("metrics", {}).get("outputRecordCount", 0)),
                "size": str(sum(f.size for f in files)),
                "isValid": True,
                "_links": {"self": {"href": f"{request.base_url}{router.prefix.lstrip('/')}/files/{file_id}"}},
            }
        )
    return _page(request, items)


def _files_of(emu: Emulator, sandbox: str, file_id: str) -> tuple[str, list[StagedFile]]:
    batch_id, _, number = file_id.rpartition("-")
    batch = emu.store.get(sandbox, BATCH_KIND, batch_id) if number == "1" else None
    if batch is None or batch["status"] not in ("success", "active"):
        raise not_found(
            f"dataset file {file_id} does not exist; list a successful batch's files with /batches/{{id}}/files"
        )
    return batch_id, list_staged_files(emu, sandbox, batch_id)


@router.api_route("/files/{file_id}", methods=["GET", "HEAD"])
def dataset_file(
    file_id: str, request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    batch_id, files = _files_of(emu, ctx.sandbox, file_id)
    base = f"{request.base_url}{router.prefix.lstrip('/')}/files/{file_id}"
    return _listing_or_content(emu, request, files, base, f"dataset file {file_id}")


@router.get("/batches/{batch_id}/failed")
def failed_files(
    batch_id: str, request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    batch = _batch(emu, ctx.sandbox, batch_id)
    files = list_staged_files(emu, ctx.sandbox, batch_id) if batch["status"] == "failed" else []
    base = str(request.url.remove_query_params(["path", "start", "limit"]))
    return _listing_or_content(emu, request, files, base, f"failed batch {batch_id}")


def _listing_or_content(emu: Emulator, request: Request, files: list, base_url: str, owner: str):
    """Without ``path``: a page of the files' entries (links under ``base_url``); with it: that file's bytes.

    :param owner: what holds the files, for the 404 message.
    """
    path = request.query_params.get("path")
    if path is None:
        return _page(request, _file_entries(request, files, base_url))
    staged = next((f for f in files if f.path == path), None)
    if staged is None:
        raise not_found(f"{owner} has no file {path!r}")
    return _content(emu, request, staged.key, path)


@router.get("/batches/{batch_id}/meta")
def batch_meta(
    batch_id: str, request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    """Diagnostics: ``path=row_errors`` lists the row-error files, ``path=row_errors/<file>`` returns one,
    ``path=input_files`` lists the batch's input files."""
    batch = _batch(emu, ctx.sandbox, batch_id)
    path = (request.query_params.get("path") or "").strip("/")
    base = str(request.url.remove_query_params(["path", "start", "limit"]))
    if path == "input_files":
        files = list_staged_files(emu, ctx.sandbox, batch_id)
        return _page(
            request, _file_entries(request, files, f"{request.base_url}{router.prefix.lstrip('/')}/files/{batch_id}-1")
        )
    if path == "":
        return _page(
            request,
            [{"name": n, "_links": {"self": {"href": f"{base}?path={n}"}}} for n in ("row_errors", "input_files")],
        )
    prefix = f"{batch_prefix(ctx.sandbox, batch['id'])}{META_DIR}/"
    listing = emu.s3.list_objects_v2(Bucket=emu.settings.staging_bucket, Prefix=meta_key(ctx.sandbox, batch_id, path))
    objects = [o for o in listing.get("Contents", ()) if o["Key"] != meta_key(ctx.sandbox, batch_id, path)]
    if objects or path == "row_errors":
        entries = [StagedFile(META_DIR, o["Key"][len(prefix) :], o["Key"], o["Size"]) for o in objects]
        return _page(request, _file_entries(request, entries, base))
    return _content(emu, request, meta_key(ctx.sandbox, batch_id, path), path)

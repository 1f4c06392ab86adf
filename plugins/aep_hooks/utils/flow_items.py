"""
The Flow Service items behind a flow (base, source and target connections, the flow), kept in step
with what a task asks for: reused while unchanged, replaced and deleted when not, never left behind.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aep_hooks.exceptions import AEPNotFoundError

if TYPE_CHECKING:
    from aep_hooks.hooks.flow_service import AEPFlowServiceHook

log = logging.getLogger(__name__)

#: Target parameters that keep their case (AEP upper-cases the enumerated ones: compression, file types).
CASE_SENSITIVE_PARAMS = frozenset({"bucketName", "path"})


def credentials_fingerprint(access_key: str, secret_key: str) -> str:
    """
    A fingerprint of S3 keys, kept in the base connection's description: AEP never returns the
    secret, so this is how a rerun sees that the keys were rotated. One-way and truncated.

    :param access_key: the S3 access key id.
    :param secret_key: the S3 secret key.
    """
    digest = hashlib.sha256(f"aep_hooks s3 credentials\0{access_key}\0{secret_key}".encode()).hexdigest()
    return f"credentials sha256:{digest[:16]}"


def _same_params(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    def same(key: str, value: Any) -> bool:
        have = existing.get(key)
        if key in CASE_SENSITIVE_PARAMS or not isinstance(value, str):
            return have == value
        return isinstance(have, str) and have.upper() == value.upper()

    return all(same(key, value) for key, value in wanted.items())


def serves(kind: str, existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """
    Whether an item found by name is what ``wanted`` would create, so that a rerun may keep it.

    Compares what a rerun may change: the keys (by fingerprint), the bucket, path and format, the
    exported dataset, and the items each one rests on.

    :param kind: ``connections``, ``sourceConnections``, ``targetConnections`` or ``flows``.
    :param existing: the item AEP holds.
    :param wanted: the create body this run would send.
    """
    if kind == "flows":
        return (
            existing.get("flowSpec", {}).get("id") == wanted["flowSpec"]["id"]
            and existing.get("sourceConnectionIds") == wanted["sourceConnectionIds"]
            and existing.get("targetConnectionIds") == wanted["targetConnectionIds"]
        )
    if existing.get("connectionSpec", {}).get("id") != wanted["connectionSpec"]["id"]:
        return False
    if existing.get("baseConnectionId") != wanted.get("baseConnectionId"):
        return False
    if kind == "connections":
        return existing.get("description", "") == wanted.get("description", "")
    return _same_params(existing.get("params") or {}, wanted.get("params") or {})


@dataclass(frozen=True)
class FlowItem:
    """
    One Flow Service item of a flow and the connections it rests on.

    :param kind: ``connections``, ``sourceConnections``, ``targetConnections`` or ``flows``.
    :param name: its deterministic name.
    :param body: the create body, from the ids of the items before it (``{name: id, or None when
        that item is still to be created}``).
    """

    kind: str
    name: str
    body: Callable[[dict[str, str | None]], dict[str, Any]]


def reconcile(hook: AEPFlowServiceHook, prefix: str, items: list[FlowItem]) -> dict[str, str]:
    """
    Keep each item found by name while it still serves; replace the others; return ``{name: id}``.

    A rerun reuses what is unchanged and deletes what it replaces (a flow before the connections
    it uses, a connection after what rests on it), so nothing is left behind: a rebuilt dataset, a
    changed bucket, path or format, or rotated keys replace the items they concern and the ones
    resting on them. The connections a replaced flow used that carry this flow's names (``prefix``;
    also those of earlier naming schemes) go with it.

    :param hook: the Flow Service hook.
    :param prefix: the start of every name of this flow's items.
    :param items: the items in the order they are created (what an item rests on comes first).
    """
    ids: dict[str, str | None] = {}
    stale: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        existing = hook.find_flow_items(item.kind, item.name)
        if existing and serves(item.kind, existing, item.body(ids)):
            ids[item.name] = existing["id"]
            continue
        ids[item.name] = None
        if existing:
            stale.append((item.kind, existing))
    accounted = {i for i in ids.values() if i} | {doc["id"] for _, doc in stale}
    for kind, existing in reversed(stale):
        log.info("Replacing %s %s (%s): it no longer matches the task", kind, existing["name"], existing["id"])
        hook.delete_flow_item(kind, existing["id"])
        if kind == "flows":
            _delete_flow_connections(hook, prefix, existing, accounted)
    for item in items:
        if ids[item.name] is None:
            ids[item.name] = hook.create_flow_item(item.kind, item.body(ids))["id"]
            log.info("Created %s %s (%s)", item.kind, item.name, ids[item.name])
    return ids


def _delete_flow_connections(hook: AEPFlowServiceHook, prefix: str, flow: dict[str, Any], accounted: set[str]) -> None:
    """The source and target connections a deleted flow used and nothing else accounts for, if named as this flow's."""
    for kind, key in (("sourceConnections", "sourceConnectionIds"), ("targetConnections", "targetConnectionIds")):
        for item_id in sorted(set(flow.get(key) or []) - accounted):
            try:
                item = hook.get_flow_item(kind, item_id)
            except AEPNotFoundError:
                continue
            if str(item.get("name", "")).startswith(prefix):
                log.info("Deleting %s %s (%s), used only by the replaced flow", kind, item["name"], item_id)
                hook.delete_flow_item(kind, item_id)

"""Persistent resource documents (datasets, batches, schemas, queries, flows, segments...).

Every AEP resource the emulator knows is one JSON document in ``aep_meta.resources`` keyed by
``(sandbox, kind, id)``, so all state is sandbox-scoped and survives an emulator restart.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from psycopg.types.json import Jsonb

from aep_emulator.db import META_SCHEMA, Database


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    """A 24-hex id like Catalog's dataset and batch ids."""
    return uuid.uuid4().hex[:24]


class Store:
    """CRUD over resource documents.

    :param db: the emulator's database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, sandbox: str, kind: str, id_: str, doc: dict[str, Any], name: str | None = None) -> dict:
        ts = now_ms()
        with self.db.connection() as conn:
            conn.execute(
                f"INSERT INTO {META_SCHEMA}.resources (sandbox, kind, id, name, doc, created_ms, updated_ms)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (sandbox, kind, id_, name, Jsonb(doc), ts, ts),
            )
        return doc

    def insert_unique_name(self, sandbox: str, kind: str, id_: str, doc: dict, name: str) -> bool:
        """Insert unless a resource of this kind already has ``name``; False when it does.

        The check and the insert run under one advisory lock so two racing creates cannot both win.
        """
        ts = now_ms()
        with self.db.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{sandbox}/{kind}/{name}",))
            exists = conn.execute(
                f"SELECT 1 FROM {META_SCHEMA}.resources WHERE sandbox=%s AND kind=%s AND name=%s",
                (sandbox, kind, name),
            ).fetchone()
            if exists:
                return False
            conn.execute(
                f"INSERT INTO {META_SCHEMA}.resources (sandbox, kind, id, name, doc, created_ms, updated_ms)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (sandbox, kind, id_, name, Jsonb(doc), ts, ts),
            )
        return True

    def get(self, sandbox: str, kind: str, id_: str) -> dict | None:
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT doc FROM {META_SCHEMA}.resources WHERE sandbox=%s AND kind=%s AND id=%s",
                (sandbox, kind, id_),
            ).fetchone()
        return row[0] if row else None

    def find_by_name(self, sandbox: str, kind: str, name: str) -> dict | None:
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT doc FROM {META_SCHEMA}.resources WHERE sandbox=%s AND kind=%s AND name=%s"
                " ORDER BY created_ms LIMIT 1",
                (sandbox, kind, name),
            ).fetchone()
        return row[0] if row else None

    def list(self, sandbox: str, kind: str) -> list[dict]:
        """All documents of a kind in creation order (callers filter and page)."""
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT doc FROM {META_SCHEMA}.resources WHERE sandbox=%s AND kind=%s ORDER BY created_ms, id",
                (sandbox, kind),
            ).fetchall()
        return [r[0] for r in rows]

    def list_all_sandboxes(self, kind: str) -> list[tuple[str, dict]]:
        """``(sandbox, doc)`` for every document of a kind (used to resume work after a restart)."""
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT sandbox, doc FROM {META_SCHEMA}.resources WHERE kind=%s ORDER BY created_ms",
                (kind,),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def update(self, sandbox: str, kind: str, id_: str, doc: dict, name: str | None = None) -> dict:
        with self.db.connection() as conn:
            conn.execute(
                f"UPDATE {META_SCHEMA}.resources SET doc=%s, updated_ms=%s, name=COALESCE(%s, name)"
                " WHERE sandbox=%s AND kind=%s AND id=%s",
                (Jsonb(doc), now_ms(), name, sandbox, kind, id_),
            )
        return doc

    def mutate(self, sandbox: str, kind: str, id_: str, fn) -> dict | None:
        """Read-modify-write one document under a row lock; ``fn(doc)`` returns the new doc."""
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT doc FROM {META_SCHEMA}.resources WHERE sandbox=%s AND kind=%s AND id=%s FOR UPDATE",
                (sandbox, kind, id_),
            ).fetchone()
            if row is None:
                return None
            doc = fn(row[0])
            conn.execute(
                f"UPDATE {META_SCHEMA}.resources SET doc=%s, updated_ms=%s WHERE sandbox=%s AND kind=%s AND id=%s",
                (Jsonb(doc), now_ms(), sandbox, kind, id_),
            )
        return doc

    def delete(self, sandbox: str, kind: str, id_: str) -> bool:
        with self.db.connection() as conn:
            cur = conn.execute(
                f"DELETE FROM {META_SCHEMA}.resources WHERE sandbox=%s AND kind=%s AND id=%s",
                (sandbox, kind, id_),
            )
            return cur.rowcount > 0

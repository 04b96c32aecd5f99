"""A signed query of plain mode is good for one body (CONTRACT §7).

In plain mode WeChat's signature covers the token, timestamp and nonce, not the body: whoever saw
one signed URL could post anything with it for the 300 s the timestamp is good. So each signed
query is remembered with the digest of its body (`signed_queries`, written in the batch's unit
beside the dedupe keys, so shared by every process): the same query with the same body is a
retry, with another body it is refused before anything runs. Safe mode needs none of this:
msg_signature covers the body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from storage.db import is_postgres
from storage.group_commit import Refused
from storage.tables import SIGNED_QUERIES

# A query is good while its timestamp is (300 s either side); kept twice that, then pruned.
RETENTION_SECONDS = 600

# The batch's queries, written first: a query already stored is left as it is. On SQLite the row
# count says whether every one was new (the common case: nothing more to read); asyncpg cannot
# count an executemany, so PostgreSQL's statement names the rows it wrote.
_REMEMBER = sqlite_insert(SIGNED_QUERIES).on_conflict_do_nothing()
_REMEMBER_PG = pg_insert(SIGNED_QUERIES).on_conflict_do_nothing().returning(SIGNED_QUERIES.c.key)
_STORED = (select(SIGNED_QUERIES.c.key, SIGNED_QUERIES.c.body_digest)
           .where(SIGNED_QUERIES.c.key.in_(bindparam("keys", expanding=True))))


class Replayed(Refused):
    """A signed query that came before with another body: refused, nothing processed."""


class SignedQuery(NamedTuple):
    """A plain-mode delivery's signed query, keyed by its timestamp and signature, and the SHA-256
    (hex) of its body: the one body that query is good for."""

    key: str
    body_digest: str

    @classmethod
    def of(cls, timestamp: str, signature: str, body: bytes) -> SignedQuery:
        # The timestamp first, zero-padded: new keys land at the end of the key index (a signature
        # alone is random), and the keys of a time before sort before a prefix (the prune).
        return cls(f"{key_prefix(int(timestamp))}:{signature}", hashlib.sha256(body).hexdigest())


def key_prefix(timestamp: int) -> str:
    return f"{max(timestamp, 0):010d}"


def expired_before(now: datetime) -> str:
    """The keys below this one belong to queries no longer good for anything."""
    return key_prefix(int(now.timestamp()) - RETENTION_SECONDS)


def remember(conn: Connection, queries: Sequence[SignedQuery | None]) -> list[bool]:
    """For each query (or None) of a batch: whether it is good for its body (new, or stored with
    this very body: a retry). The new ones are stored; of one query twice in a batch, the first
    body counts. On PostgreSQL the caller holds the queries' locks (a retry in another process)."""
    first: dict[str, str] = {}
    for query in queries:
        if query is not None and query.key not in first:
            first[query.key] = query.body_digest
    if not first:
        return [True] * len(queries)
    rows = [{"key": key, "body_digest": digest} for key, digest in first.items()]
    if is_postgres(conn):
        all_new = len(conn.execute(_REMEMBER_PG, rows).all()) == len(rows)
    else:
        all_new = conn.execute(_REMEMBER, rows).rowcount == len(rows)
    if not all_new:  # some came before: each is good for the body stored with it
        first = dict(conn.execute(_STORED, {"keys": list(first)}).all())
    return [query is None or first[query.key] == query.body_digest for query in queries]

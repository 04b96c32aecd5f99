"""A signed query of plain mode is good for one body (CONTRACT §7).

In plain mode WeChat's signature covers the token, timestamp and nonce, not the body: whoever saw
one signed URL could post anything with it for the 300 s the timestamp is good. So each signed
query is remembered with the digest of its body (`signed_queries`, read and written in the
batch's unit beside the dedupe keys, so shared by every process): the same query with the same
body is a retry, with another body it is refused before anything runs. Safe mode needs none of
this: msg_signature covers the body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.group_commit import Refused

# A query is good while its timestamp is (300 s either side); kept twice that, then pruned.
RETENTION_SECONDS = 600


class Replayed(Refused):
    """A signed query that came before with another body: refused, nothing processed."""


@dataclass(frozen=True)
class SignedQuery:
    """A plain-mode delivery's signed query, named by its timestamp and signature, and the SHA-256
    (hex) of its body: the one body that query is good for."""

    timestamp: int
    signature: str
    body_digest: str

    @classmethod
    def of(cls, timestamp: str, signature: str, body: bytes) -> SignedQuery:
        return cls(int(timestamp), signature, hashlib.sha256(body).hexdigest())

    @property
    def key(self) -> str:
        # The timestamp first, zero-padded: new keys land at the end of the key index (a signature
        # alone is random), and the keys of a time before sort before a prefix (the prune).
        return f"{key_prefix(self.timestamp)}:{self.signature}"


def key_prefix(timestamp: int) -> str:
    return f"{max(timestamp, 0):010d}"


def expired_before(now: datetime) -> str:
    """The keys below this one belong to queries no longer good for anything."""
    return key_prefix(int(now.timestamp()) - RETENTION_SECONDS)


def check(queries: Sequence[SignedQuery | None], seen: dict[str, str]) -> tuple[list[bool], list[dict[str, Any]]]:
    """For each query (or None) of a batch: whether it is good for its body (new, or seen with
    this very body: a retry); and the rows of the queries new to `seen` (the stored ones, key ->
    digest; updated here, so a batch holding one query twice accepts one body)."""
    good, rows = [], []
    for query in queries:
        if query is None:
            good.append(True)
            continue
        known = seen.get(query.key)
        if known is None:
            seen[query.key] = query.body_digest
            rows.append({"key": query.key, "body_digest": query.body_digest})
        good.append(known is None or known == query.body_digest)
    return good, rows

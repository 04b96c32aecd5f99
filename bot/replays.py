"""A signed query of plain mode is good for one body (CONTRACT §7).

In plain mode WeChat's signature covers the token, timestamp and nonce, not the body: whoever saw
one signed URL could post anything with it for the 300 s the timestamp is good. So each signed
query is remembered with the digest of its body, beside the dedupe keys (processed_messages,
key `q:<timestamp>:<signature>`, written in the same statement as the batch's dedupe keys, so
shared by every process and pruned with them): the same query with the same body is a retry, with another body it
is refused before anything runs. Safe mode needs none of this: msg_signature covers the body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.group_commit import Refused


class Replayed(Refused):
    """A signed query that came before with another body: refused, nothing processed."""


@dataclass(frozen=True)
class SignedQuery:
    """A plain-mode delivery's signed query, named by its signature, and the SHA-256 (hex) of its
    body: the one body that query is good for."""

    signature: str
    body_digest: str
    timestamp: str = ""

    @classmethod
    def of(cls, signature: str, body: bytes, timestamp: str = "") -> SignedQuery:
        return cls(signature, hashlib.sha256(body).hexdigest(), timestamp)

    @property
    def key(self) -> str:
        # The timestamp first: it grows, so new keys land at the end of the key index instead of
        # on random pages (a signature alone is random); the signature alone names the query.
        return f"q:{self.timestamp}:{self.signature}"


def check(queries: Sequence[tuple[SignedQuery | None, str]], seen: dict[str, str],
          now: datetime) -> tuple[list[bool], list[dict[str, Any]]]:
    """For each (query or None, sender) of a batch: whether the query is good for its body (new,
    or seen with this very body: a retry); and the rows of the queries new to `seen` (the stored
    ones, key -> digest; updated here, so a batch holding one query twice accepts one body)."""
    good, rows = [], []
    for query, openid in queries:
        if query is None:
            good.append(True)
            continue
        known = seen.get(query.key)
        if known is None:
            seen[query.key] = query.body_digest
            rows.append({"key": query.key, "openid": openid, "reply": None, "created_at": now,
                         "body_digest": query.body_digest})
        good.append(known is None or known == query.body_digest)
    return good, rows

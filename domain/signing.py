"""Signed links: a short HMAC makes a public URL unguessable and checkable without a lookup table.
Each kind of link has its own key, derived from the account's secrets, so that a link of one
kind is no key to another, and changing the secrets retires every link."""

from __future__ import annotations

import hashlib
import hmac

from domain.config import Config

SIGNATURE_CHARS = 32  # hex: 128 bits


def link_key(config: Config, purpose: str) -> bytes:
    secret = "\0".join((config.wechat.app_secret, config.admin.token)).encode()
    return hmac.new(secret, b"distbot link\0" + purpose.encode(), hashlib.sha256).digest()


def sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:SIGNATURE_CHARS]


def verify(key: bytes, message: str, signature: str) -> bool:
    return hmac.compare_digest(sign(key, message).encode(), signature.encode("utf-8", "surrogateescape"))

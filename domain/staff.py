"""Staff accounts (issue 23, CONTRACT §10): persons who sign in to the console with a name and a
password; their roles are the scopes (kit.scopes) their sessions hold. An account is created by an
admin (the console's 员工, `distbot staff add`), disabled or enabled, given a new password or other
roles; it is never deleted, so the audit trail's names stay its own.

Passwords are stored as argon2id hashes (argon2-cffi, its default parameters: about 50 ms of CPU
each). `hash_password` and `verify_password` are that CPU: callers run them off the event loop.
An unknown or disabled account is verified against a dummy hash, so the time taken does not say
whether the name exists.

A second factor is optional per account: a TOTP secret (RFC 6238, pyotp: 6 digits, 30 s, one step
of drift either way) that an admin turns on in 员工 and the person adds to an authenticator app;
signing in then also takes the 验证码 it shows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.catalogue import ROLE_NAMES  # noqa: F401  (this module's API: role names as people read them)
from domain.config_sections import SCOPES
from domain.refusals import Refusal
from storage.tables import STAFF

# The one catalogue of the roles' names as staff read them (console, 403 pages, CLI's listing).
MAX_NAME = 32  # console_sessions.token_name and the audit trail's token_name hold this much
MIN_PASSWORD, MAX_PASSWORD = 8, 128
_NAME = re.compile(r"[\w.@-]+")  # letters of any script, digits, _ . @ -
_HASHER = PasswordHasher()


def role_names(roles: Iterable[str], sep: str = "、") -> str:
    """Roles in Chinese, in the catalogue's order: "财务、运营" (sep="或": "财务或运营")."""
    given = set(roles)
    return sep.join(ROLE_NAMES[r] for r in SCOPES if r in given) or "无"


def hash_password(password: str) -> str:
    """The argon2id hash of `password` (CPU: off the event loop)."""
    return _HASHER.hash(password)


@functools.cache
def _dummy() -> str:
    return _HASHER.hash("distbot: no such account")


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` is the one hashed in `stored`; None (no such account) costs the same
    time and is False (CPU: off the event loop)."""
    try:
        return _HASHER.verify(stored or _dummy(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(name: str, secret: str) -> str:
    """What an authenticator app scans (otpauth://totp/...)."""
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="distbot")


def totp_ok(secret: str | None, code: str, now: datetime) -> bool:
    """Whether `code` is the account's 验证码 at `now` (no secret: no second factor, always)."""
    return secret is None or pyotp.TOTP(secret).verify(code.strip(), for_time=now.timestamp(), valid_window=1)


def _invalid(sentence: str, message: str) -> Refusal:
    return Refusal("invalid_staff", message, sentence=sentence)


def checked_name(name: str, reserved: Iterable[str]) -> str:
    """An account's name: 1-32 letters, digits or _ . @ -, not a token's name (the audit trail
    names both alike)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise _invalid(f"账号须为 1–{MAX_NAME} 个字母、数字或 _ . @ -。", "a name is 1-32 letters, digits, _ . @ -")
    if name in set(reserved) | {"-"}:
        raise _invalid(f"“{name}”是一个管理令牌的名字，请换一个账号名。", "that name is a token's")
    return name


def checked_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise _invalid(f"密码须为 {MIN_PASSWORD}–{MAX_PASSWORD} 个字符。", "a password is 8-128 characters")
    return password


def checked_roles(roles: Iterable[str]) -> str:
    """The roles as stored: known scopes, space-separated in the catalogue's order; at least one."""
    given = set(roles)
    if not given or given - set(SCOPES):
        raise _invalid("请至少选择一个角色（商城、财务、运营、管理员）。", f"roles are some of {', '.join(SCOPES)}")
    return " ".join(r for r in SCOPES if r in given)


def add(session: Session, name: str, password_hash: str, roles: str, now: datetime) -> int:
    """A new account (name, roles already checked); its id. 409 when the name is taken."""
    if session.scalar(select(STAFF.c.id).where(STAFF.c.name == name)) is not None:
        raise Refusal("staff_exists", f"an account named {name!r} exists", sentence=f"账号“{name}”已经存在。")
    return session.execute(STAFF.insert().values(name=name, password_hash=password_hash, roles=roles,
                                                 disabled=False, created_at=now).returning(STAFF.c.id)).scalar_one()


def accounts(session: Session) -> list[Any]:
    """Every account, by name."""
    return list(session.execute(select(STAFF).order_by(STAFF.c.name)))


def account(session: Session, *, staff_id: int | None = None, name: str | None = None) -> Any:
    """One account by id or name; 404 when there is none."""
    found = session.execute(select(STAFF).where(
        STAFF.c.id == staff_id if staff_id is not None else STAFF.c.name == name)).first()
    if found is None:
        raise Refusal("not_found", "no such staff account", sentence="没有这个账号。")
    return found


def for_sign_in(session: Session, name: str) -> Any:
    """The enabled account of that name, or None."""
    return session.execute(select(STAFF).where(STAFF.c.name == name, STAFF.c.disabled.is_(False))).first()


def _change(session: Session, staff_id: int, acting: str, **values: Any) -> Any:
    """Change an account (404 when none); an admin changes neither their own state nor roles."""
    found = account(session, staff_id=staff_id)
    if found.name == acting and ("disabled" in values or "roles" in values):
        raise _invalid("不能停用自己的账号或修改自己的角色，请让另一位管理员来做。", "not your own account")
    session.execute(update(STAFF).where(STAFF.c.id == staff_id).values(**values))
    return found


def set_disabled(session: Session, staff_id: int, disabled: bool, acting: str) -> Any:
    """Disable (its sessions end at their next request) or enable an account; the account."""
    return _change(session, staff_id, acting, disabled=disabled)


def set_password(session: Session, staff_id: int, password_hash: str) -> Any:
    """A new password (its sessions end); the account."""
    return _change(session, staff_id, "", password_hash=password_hash)


def set_roles(session: Session, staff_id: int, roles: str, acting: str) -> Any:
    """Other roles (its sessions end; signing in again gives the new scopes); the account."""
    return _change(session, staff_id, acting, roles=roles)


def set_totp(session: Session, staff_id: int, secret: str | None) -> Any:
    """Turn the second factor on (a new secret) or off (None); the account."""
    return _change(session, staff_id, "", totp_secret=secret)


def signed_in(session: Session, staff_id: int, now: datetime) -> None:
    session.execute(update(STAFF).where(STAFF.c.id == staff_id).values(last_sign_in_at=now))

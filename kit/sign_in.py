"""Who signs in to the console, and how often they failed (CONTRACT §7). kit.console's sign-in
uses it: `start_try` before the token is compared, `signer` to compare it, then `failed_try` or
`end_try`.

- Who: with 账号 filled, a person (a staff account, domain.staff) whose password is the one given;
  empty, the configured token given (kit.scopes.identify). A disabled or unknown account and a
  wrong password (or 验证码, when the account has a second factor) are refused alike, in the same
  time (argon2 in a thread, against a dummy hash when there is no account), with the same sentence
  as a wrong token.

- The client is the socket's address. When that peer is one of `[server] trusted_proxies`, the
  client is read from X-Forwarded-For, from the right: the first address that is not a trusted
  proxy. Each proxy appends the address it was connected from, so whatever stands left of that is
  what the client itself sent; behind one proxy that sets the header it is its first address.
- Tries: at most LIMIT tries of one client within WINDOW. A try counts from the moment it starts
  (a sign_in_tries row, written before the token is compared), so parallel tries check no more
  than LIMIT tokens; a successful try's row goes with the sign-in, a failed one's stays until it
  leaves the window. Beyond the limit a try is refused (429 with Retry-After: until the oldest
  counted try leaves the window) and its token is not compared.
- The rows are in the database, so every process counts the same tries (on PostgreSQL an advisory
  lock per client makes "count, then add" one step; on SQLite the writer's BEGIN IMMEDIATE does).
  A refused try costs one indexed read, a compared one two short units of work: sign-ins are rare.
- A successful sign-in does not clear its client's failures: otherwise whoever holds a narrow
  token could clear them as often as they like and keep guessing the admin's.
- Every failed try is in the audit trail (token "-", actor "client:<address>", 401, 登录失败) and
  in a warning log line naming the client; the token tried is in neither. The 429s are in neither.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from kit.auditing import AUDIT_LOG
from kit.app_keys import CONFIG, READER, WRITER
from kit.scopes import Principal, fingerprint, identify, person_fingerprint
from domain import audit_log as audit
from domain import staff
from domain.catalogue import AUDIT, say
from storage.db import delete_chunk, is_postgres
from storage.tables import SIGN_IN_TRIES

log = logging.getLogger(__name__)
LIMIT = 10  # tries of one client within WINDOW
WINDOW = timedelta(minutes=10)
FAILED = say(AUDIT, "sign_in_failed")  # the audit row's summary
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Try:
    """A sign-in try under way: its row, its client, and how many of the client's tries count now
    (this one included)."""

    id: int
    client: str
    count: int


@dataclass(frozen=True)
class Signer:
    """Who signed in: the principal, the staff account's id (None: a token) and the fingerprint
    its session keeps (kit.scopes)."""

    principal: Principal
    staff_id: int | None
    fingerprint: str


async def signer(request: web.Request, account: str, secret: str, code: str, now: datetime) -> Signer | None:
    """The person `account` whose password is `secret` (and whose 验证码 is `code`, when the account
    has a second factor), or (no account) the token `secret`; None when neither is so."""
    config = request.config_dict[CONFIG]
    if not account:
        principal = identify(config, secret)
        return None if principal is None else Signer(principal, None, fingerprint(config, principal.name) or "")
    found = None if len(account) > staff.MAX_NAME else await request.config_dict[READER].run(
        lambda s: staff.for_sign_in(s, account))
    password_hash = found.password_hash if found is not None else None
    if not await asyncio.to_thread(staff.verify_password, password_hash, secret) or found is None:
        return None
    if not staff.totp_ok(found.totp_secret, code, now):
        return None
    return Signer(Principal(found.name, frozenset(found.roles.split()), person=True), found.id,
                  person_fingerprint(config, found.name, found.password_hash, found.roles))


def client_address(request: web.Request) -> str:
    """The client's address, as the module docstring says."""
    peer = _address(request.remote or "")
    trusted = request.config_dict[CONFIG].server.trusted_proxies
    if peer is None:  # not an IP socket
        return (request.remote or "")[:64]
    if not _within(peer, trusted):
        return str(peer)
    client = peer
    for hop in reversed(request.headers.get("X-Forwarded-For", "").split(",")):
        found = _address(hop.strip())
        if found is None:  # not written by a proxy of ours: the address before it is the client
            break
        client = found
        if not _within(found, trusted):
            break
    return str(client)


def _address(value: str) -> Address | None:
    try:
        found = ipaddress.ip_address(value)
    except ValueError:
        return None
    mapped = found.ipv4_mapped if isinstance(found, ipaddress.IPv6Address) else None
    return mapped or found


def _within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def _counted(session: Session, client: str, now: datetime) -> tuple[int, datetime | None]:
    """The client's tries within the window, and when the oldest of them started."""
    count, oldest = session.execute(select(func.count(), func.min(SIGN_IN_TRIES.c.at)).where(
        SIGN_IN_TRIES.c.client == client, SIGN_IN_TRIES.c.at > now - WINDOW)).one()
    return count, oldest


def _wait(count: int, oldest: datetime | None, now: datetime) -> int | None:
    """Seconds until the client may try again (None: now), whole and at least 1."""
    if count < LIMIT or oldest is None:
        return None
    return max(1, math.ceil((oldest + WINDOW - now).total_seconds()))


async def start_try(request: web.Request, now: datetime) -> Try | int:
    """The try, counted; or, beyond the limit, the seconds to wait (nothing written)."""
    client = client_address(request)
    wait = _wait(*await request.config_dict[READER].run(lambda s: _counted(s, client, now)), now)
    if wait is not None:
        return wait

    def start(s: Session) -> Try | int:
        if is_postgres(s):  # another process may count this client's tries at the same time
            s.execute(_LOCK, {"k": "distbot-sign-in:" + client})
        # This client's old tries only: its lock covers them (others' go with the hourly prune).
        s.execute(delete(SIGN_IN_TRIES).where(SIGN_IN_TRIES.c.client == client, SIGN_IN_TRIES.c.at <= now - WINDOW))
        count, oldest = _counted(s, client, now)
        wait = _wait(count, oldest, now)
        if wait is not None:
            return wait
        row_id = s.execute(SIGN_IN_TRIES.insert().values(client=client, at=now).returning(SIGN_IN_TRIES.c.id))
        return Try(row_id.scalar_one(), client, count + 1)
    return await request.config_dict[WRITER].run(start)


def prune(session: Session, now: datetime) -> int:
    """A chunk of the tries that stopped counting, of clients that did not come back (the
    prune-sign-in-tries job); how many went."""
    return delete_chunk(session, SIGN_IN_TRIES, SIGN_IN_TRIES.c.at <= now - WINDOW)


def end_try(session: Session, attempt: Try) -> None:
    """A successful try stops counting (inside the sign-in's unit of work)."""
    session.execute(delete(SIGN_IN_TRIES).where(SIGN_IN_TRIES.c.id == attempt.id))


async def failed_try(request: web.Request, attempt: Try, now: datetime) -> None:
    """A wrong token: the try keeps counting; the audit trail and the log say so."""
    log.warning("console: failed sign-in from %s (%d of %d tries within %d minutes)", attempt.client,
                attempt.count, LIMIT, WINDOW // timedelta(minutes=1))
    entry = audit.Entry(at=now, token_name="-", actor=f"client:{attempt.client}"[:64], method=request.method,
                        path=request.path, status=401, summary=FAILED)
    try:
        await request.config_dict[AUDIT_LOG](entry)
    except Exception:  # the refusal stands; the log line above already names the client
        log.exception("audit: could not record a failed sign-in from %s", attempt.client)

"""Scoped tokens (CONTRACT §4.11): who a bearer token is, and what it may do.

Every /api route and console page declares the scopes that may use it, in one place: the feature
that owns it. `Feature(name, scope="finance")` is the default of the feature's `api` routes and
`console` pages; `api.get(..., scope=...)` / `console.get(..., scope=...)` overrides it for one
route. A declaration is one scope or a tuple of scopes (a read several kinds of staff need).

- `admin.token` is the token named "admin" and holds every scope; `[[admin.tokens]]` adds named
  tokens with some of them (domain.config.AdminToken).
- A token is identified by comparing it, in constant time, with every configured token (all of
  them, whichever matches), so neither the answer's timing nor its order tells which one nearly
  matched. Tokens are never logged or stored: the console keeps only the name and the scopes.
- A console session keeps its token's `fingerprint` (an HMAC of the token's name, value and
  scopes, keyed from the AppSecret, so a copy of the database is no oracle for guessing tokens);
  the console compares it with the configured token's on every request (kit.console). A person's
  session (a staff account, domain.staff) keeps `person_fingerprint`, of the account's name,
  password hash and roles: a new password or other roles end it.
- A token holding `admin` may do everything; any other token may use a route when it holds one of
  the route's scopes. A route that declares nothing is the admin's alone (the safe default) and
  tests/test_scopes.py fails on it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from aiohttp import web

from kit.app_keys import CONFIG
from domain.config import Config
from domain.config_sections import ADMIN, SCOPES

# What a route declares: one scope, several, or nothing (None: the feature's default, or admin).
ScopeSpec = str | tuple[str, ...] | None
ANY: tuple[str, ...] = SCOPES  # every scope: e.g. the OpenAPI document, the console's 概览


def scopes_of(spec: ScopeSpec, default: ScopeSpec = None) -> frozenset[str]:
    """A declaration as a set of scopes; an unknown scope stops start-up (a typo is no scope)."""
    chosen = spec if spec is not None else default
    if chosen is None:
        return frozenset()
    names = frozenset((chosen,) if isinstance(chosen, str) else chosen)
    unknown = names - set(SCOPES)
    if unknown or not names:
        raise ValueError(f"unknown scope {sorted(unknown)!r}; scopes are {', '.join(SCOPES)}")
    return names


@dataclass(frozen=True)
class Principal:
    """A known token, or a person signed in to the console (`person`: a staff account): its name
    and scopes (never the token itself)."""

    name: str
    scopes: frozenset[str]
    person: bool = False

    def may(self, route_scopes: frozenset[str]) -> bool:
        """Whether this token may use a route declaring `route_scopes` (empty: admin only)."""
        return ADMIN in self.scopes or bool(self.scopes & route_scopes)

    @property
    def api_actor(self) -> str:
        """How records name this token's API requests: "admin" for admin.token (as before named
        tokens existed), "token:<name>" for the others."""
        return "admin" if self.name == ADMIN else f"token:{self.name}"


def identify(config: Config, token: str) -> Principal | None:
    """The configured token equal to `token`, compared in constant time with every one of them."""
    given = token.encode("utf-8", "surrogateescape")  # aiohttp hands undecodable bytes over as surrogates
    found: Principal | None = None
    for name, expected, scopes in _tokens(config):
        if hmac.compare_digest(given, expected.encode()) and found is None:
            found = Principal(name, frozenset(scopes))
    return found


def fingerprint(config: Config, name: str) -> str | None:
    """The configured token named `name` as a fingerprint (64 hex): another value or other scopes
    give another; None when no token has that name. Rotating the AppSecret changes every one."""
    for known, token, scopes in _tokens(config):
        if known == name:
            return _keyed(config, "\0".join((known, token, " ".join(sorted(scopes)))))
    return None


def person_fingerprint(config: Config, name: str, password_hash: str, roles: str) -> str:
    """A staff account as its sessions keep it (64 hex): a new password or other roles give another."""
    return _keyed(config, "\0".join(("staff", name, password_hash, roles)))


def _keyed(config: Config, held: str) -> str:
    key = hmac.new(config.wechat.app_secret.encode(), b"distbot console session", hashlib.sha256).digest()
    return hmac.new(key, held.encode(), hashlib.sha256).hexdigest()


def token_names(config: Config) -> list[str]:
    """The configured tokens' names (a staff account takes none of them: the audit trail names both)."""
    return [name for name, _, _ in _tokens(config)]


def _tokens(config: Config) -> Iterable[tuple[str, str, Iterable[str]]]:
    yield ADMIN, config.admin.token, SCOPES
    for t in config.admin.tokens:
        yield t.name, t.token, t.scopes


def bearer(request: web.Request) -> Principal | None:
    """The principal of the request's `Authorization: Bearer <token>` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token:
        return None
    return identify(request.config_dict[CONFIG], token)


def describe(scopes: frozenset[str]) -> str:
    """A route's scopes in an error message or a document: "finance or ops"; "admin" when none."""
    return " or ".join(sorted(scopes)) if scopes else ADMIN


PRINCIPAL = web.RequestKey("principal", Principal)  # set by the /api middleware and the console guard


def principal_of(request: web.Request) -> Principal | None:
    return request.get(PRINCIPAL)


class ConsolePages(web.RouteTableDef):
    """A feature's console pages (paths under /admin) with the scopes that may use each:
    `@feature.console.get(path)` takes the feature's scope, `...get(path, scope="admin")` its own."""

    def __init__(self, scope: ScopeSpec = None):
        super().__init__()
        self.scope = scope
        self.scopes: dict[tuple[str, str], frozenset[str]] = {}

    def route(self, method: str, path: str, *, scope: ScopeSpec = None, **kwargs: Any) -> Any:
        self.scopes[(method, path)] = scopes_of(scope, self.scope)
        return super().route(method, path, **kwargs)

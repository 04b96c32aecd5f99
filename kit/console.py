"""The admin console's transport (/admin/, CONTRACT §4.9, §10): sign-in with a token or as a
person (a staff account), a server-side session, CSRF on every form, the page frame. Each feature declares its own console
pages (`feature.console`, paths under /admin); this module only guards and frames them.

- Sign-in: the token, compared in constant time, or (账号 filled) a person's password (argon2,
  in a thread: kit.sign_in.signer); after LIMIT tries of one client within WINDOW
  further tries are refused (429) before the token is compared, and every failure is audited
  (kit.sign_in). The session is a random token in an HttpOnly, SameSite=Strict cookie (Secure
  over HTTPS) whose hash is the key of a console_sessions row, so every process knows it.
- A session belongs to its token: it keeps the token's fingerprint (kit.scopes.fingerprint) and
  ends (its row deleted) at the first request after the configured token of its name is gone,
  replaced or has other scopes (a person's: after the account is disabled or has another password
  or other roles; signing in again gives the new roles' scopes); after IDLE without a request; MAX_AGE after sign-in however
  active; or at 退出登录. Time is the app's CLOCK (tests move it).
- CSRF: every POST carries `csrf_token`, the session's (the sign-in form: a double-submit cookie);
  anything else is 403 and changes nothing. A multipart form (a file, e.g. a content pack) may be
  up to MAX_FORM_BYTES; aiohttp spools its file to disk while the guard reads the token.
- What a page changes is recorded with the session that did it: `actor_of(request)` names it
  ("console:<8 hex>:<token name>") wherever the API records who acted, and every form sent by a
  session is in the audit trail (kit.auditing), with what `done` told the admin as its summary.
- A form refused by the rules: whatever raises a domain.refusals.Refusal beneath a form's handler
  sends the admin back (`returns_to`, else the section's page) with the refusal's sentence.
- Scopes (kit.scopes): any configured token signs in; the session keeps the token's name and
  scopes (never the token). The navigation shows only the pages the session may open; a page or
  form outside its scopes answers 403 and changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from sqlalchemy import delete, or_, select, update

from kit.api import ACTOR
from kit.auditing import audited, note, route_name
from kit.scopes import ANY, PRINCIPAL, ConsolePages, Principal, fingerprint, person_fingerprint, scopes_of
from kit.sign_in import end_try, failed_try, signer, start_try
from kit.app_keys import CLOCK, CONFIG, READER, WRITER
from content.console_pages import TEMPLATES, render
from content.pages import FAVICON
from domain import audit_log as audit
from domain import staff
from domain.catalogue import AUDIT, CONSOLE, audit_summary, say
from domain.config_sections import ADMIN
from domain.refusals import Refusal
from storage.tables import CONSOLE_SESSIONS, STAFF

SESSION_COOKIE = "distbot_admin"
LOGIN_COOKIE = "distbot_login"
FLASH_COOKIE = "distbot_flash"
IDLE = timedelta(minutes=30)
MAX_AGE = timedelta(hours=12)  # after sign-in, however active
TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often per session
LIVE_JS = TEMPLATES / "live.js"
MAX_PAGE = 10**6  # a page number beyond any list
MAX_FORM_BYTES = 51 * 1024 * 1024  # a multipart form: a 50 MiB content pack and its fields
# A page shows in the navigation once a feature serves it (and the session may open it).
NAV = (("/", "概览"), ("/distributors", "分销员"), ("/stats", "推广统计"), ("/orders", "订单"),
       ("/commissions", "佣金记录"), ("/withdrawals", "提现"), ("/content", "内容"), ("/campaigns", "活动"),
       ("/contests", "比赛"), ("/tickets", "客服"), ("/risk", "风险"), ("/settings", "分销设置"), ("/staff", "员工"),
       ("/audit", "审计日志"))
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
           "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"}

ConsoleHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ConsoleSession:
    id: str
    csrf: str
    actor: str
    last_seen_at: datetime
    principal: Principal


SESSION = web.RequestKey("console_session", ConsoleSession)  # set by the guard
# Where a form goes back to when it is refused (returns_to); else the page of its first segment.
BACK = web.RequestKey("console_back", str)


# The scopes of every console route, and of each page by its path (GET), for the guard and the nav.
ROUTE_SCOPES = web.AppKey("console_route_scopes", dict[web.AbstractRoute, frozenset[str]])
PAGE_SCOPES = web.AppKey("console_page_scopes", dict[str, frozenset[str]])


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _secure(request: web.Request) -> bool:
    return request.secure or request.config_dict[CONFIG].server.public_url.startswith("https://")


# ---- pages ----------------------------------------------------------------------------------------
def page(request: web.Request, template: str, *, title: str, current: str = "", status: int = 200,
         **values: Any) -> web.Response:
    """A console page in the frame (navigation, 退出登录, the flash message of the last action)."""
    session = request.get(SESSION)
    flash = unquote(request.cookies.get(FLASH_COOKIE, ""))
    html = render(template, title=title, nav=nav_of(request), current=current, session=session,
                  csrf_token=session.csrf if session else "", flash=flash.removeprefix("!"),
                  flash_error=flash.startswith("!"), **values)
    response = web.Response(text=html, content_type="text/html", status=status, headers=HEADERS)
    if flash:
        response.del_cookie(FLASH_COOKIE, path="/admin")
    return response


def may_open(request: web.Request, path: str) -> bool:
    """Whether the signed-in session may open the page at `path` (under /admin), e.g. for a link."""
    session, scopes = request.get(SESSION), request.app[PAGE_SCOPES].get(path)
    return session is not None and scopes is not None and session.principal.may(scopes)


def nav_of(request: web.Request) -> list[tuple[str, str]]:
    return [(path, name) for path, name in NAV if may_open(request, path)]


def refused(request: web.Request, scopes: frozenset[str]) -> web.Response:
    """A page or form outside the session's scopes: 403, in the frame, nothing changed."""
    session = request[SESSION]
    who = say(CONSOLE, "account" if session.principal.person else "token")
    roles = staff.role_names(scopes or {ADMIN}, say(CONSOLE, "or"))
    return _framed(request, say(CONSOLE, "forbidden_title"), 403,
                   say(CONSOLE, "forbidden", who=who, name=session.principal.name, roles=roles))


def not_found(request: web.Request, missing: web.HTTPNotFound | None = None) -> web.Response:
    """No such console page (or nothing at this address): 404, in the frame, in Chinese; with
    what a page said is missing (its HTTPNotFound's text), when it said something."""
    said = missing.text if missing is not None and missing.text != web.HTTPNotFound().text else None
    return _framed(request, say(CONSOLE, "not_found_title"), 404,
                   said or say(CONSOLE, "not_found", path=request.path))


def _framed(request: web.Request, title: str, status: int, message: str) -> web.Response:
    session = request[SESSION]
    html = render("base.html", title=title, nav=nav_of(request), current="", session=session,
                  csrf_token=session.csrf, flash_error=True, flash=message, heading=title)
    return web.Response(text=html, content_type="text/html", status=status, headers=HEADERS)


def page_number(request: web.Request, name: str = "page", last: int = MAX_PAGE) -> int:
    """A list's page number from the query (`name`), 1 when missing or not a number, at most `last`."""
    raw = request.query.get(name, "1")
    return min(max(int(raw), 1), last) if raw.isascii() and raw.isdigit() and len(raw) < 12 else 1


def see_other(location: str) -> web.Response:
    """303 See Other: after a form, the browser GETs `location` (returned, not raised, so that
    cookies set on it are kept)."""
    return web.Response(status=303, headers={"Location": location, **HEADERS})


def done(request: web.Request, path: str, message: str, *, error: bool = False) -> web.Response:
    """After a form: back to a page (POST, redirect, GET), which shows `message` once; the message
    is the summary of the form's audit row."""
    note(request, (say(CONSOLE, "not_done") if error else "") + message)
    response = see_other(f"/admin{path}")
    response.set_cookie(FLASH_COOKIE, quote(("!" if error else "") + message), path="/admin", httponly=True,
                        samesite="Strict", secure=_secure(request), max_age=60)
    return response


def returns_to(request: web.Request, path: str) -> str:
    """Name the page a form goes back to (`path`, under /admin) when something beneath it raises a
    domain.refusals.Refusal; the guard then shows the refusal's sentence there. `path` returned."""
    request[BACK] = path
    return path


def _refused_form(request: web.Request, refusal: Refusal) -> web.Response:
    """The one translation of a refusal for the console: back to the form's page, which shows the
    refusal's sentence as the error of the last action (its unit of work rolled back)."""
    first = request.path.removeprefix("/admin").split("/")[1]
    return done(request, request.get(BACK, f"/{first}"), refusal.sentence, error=True)


def sign_in_page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    """The sign-in form, with a fresh double-submit token in a cookie and in the form."""
    token = secrets.token_urlsafe(24)
    html = render("login.html", title="登录", nav=NAV, current="", session=None, csrf_token=token, flash=error,
                  flash_error=bool(error))
    response = web.Response(text=html, content_type="text/html", status=status, headers=HEADERS)
    response.set_cookie(LOGIN_COOKIE, token, path="/admin", httponly=True, samesite="Strict", secure=_secure(request))
    return response


def forbidden(message: str, *, status: int = 403) -> web.Response:
    html = render("base.html", title=say(CONSOLE, "refused_title"), nav=NAV, current="", session=None, flash=message,
                  flash_error=True)
    return web.Response(text=html, content_type="text/html", status=status, headers=HEADERS)


# ---- sessions ---------------------------------------------------------------------------------------
async def _session(request: web.Request) -> ConsoleSession | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    sid, now = _hash(raw), request.config_dict[CLOCK].now()
    person = (STAFF.c.disabled, STAFF.c.password_hash, STAFF.c.roles)
    row = await request.config_dict[READER].run(lambda s: s.execute(
        select(CONSOLE_SESSIONS, *person).outerjoin(STAFF, STAFF.c.id == CONSOLE_SESSIONS.c.staff_id)
        .where(CONSOLE_SESSIONS.c.id == sid)).first())
    if row is None:
        return None
    if _ended(request, row, now):
        await _end(request, sid)
        return None
    if now - row.last_seen_at > TOUCH_EVERY:
        await request.config_dict[WRITER].run(lambda s: s.execute(
            update(CONSOLE_SESSIONS).where(CONSOLE_SESSIONS.c.id == sid).values(last_seen_at=now)))
    return ConsoleSession(row.id, row.csrf, row.actor, now,
                          Principal(row.token_name, frozenset(row.scopes.split()), row.staff_id is not None))


def _ended(request: web.Request, row: Any, now: datetime) -> bool:
    """Idle too long, signed in too long ago, or its token is not the one configured now (gone,
    replaced, other scopes: the configuration is read on every request); a person's account
    disabled, or with another password or other roles (read with the session)."""
    config = request.config_dict[CONFIG]
    if row.staff_id is None:
        current = fingerprint(config, row.token_name)
    else:
        current = None if row.disabled else person_fingerprint(config, row.token_name, row.password_hash, row.roles)
    return (now - row.last_seen_at > IDLE or now - row.created_at > MAX_AGE or current is None
            or not hmac.compare_digest(current, row.fingerprint))


async def _end(request: web.Request, sid: str) -> None:
    await request.config_dict[WRITER].run(lambda s: s.execute(
        delete(CONSOLE_SESSIONS).where(CONSOLE_SESSIONS.c.id == sid)))


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    given = str(form.get("csrf_token", ""))
    if not given or not hmac.compare_digest(given, request.cookies.get(LOGIN_COOKIE, "")):
        return forbidden(say(CONSOLE, "login_expired"))
    now = request.config_dict[CLOCK].now()
    attempt = await start_try(request, now)
    if isinstance(attempt, int):  # too many tries: refused, the token not compared
        response = sign_in_page(request, status=429,
                                error=say(CONSOLE, "too_many_tries", minutes=math.ceil(attempt / 60)))
        response.headers["Retry-After"] = str(attempt)
        return response
    found = await signer(request, str(form.get("account", "")).strip(), str(form.get("token", "")),
                         str(form.get("code", "")), now)
    if found is None:
        await failed_try(request, attempt, now)
        return sign_in_page(request, error=say(CONSOLE, "wrong_credentials"), status=401)
    principal = found.principal
    raw = secrets.token_urlsafe(32)
    sid = _hash(raw)
    actor = f"console:{sid[:8]}:{principal.name}"

    def start(s: Any) -> None:
        end_try(s, attempt)
        s.execute(delete(CONSOLE_SESSIONS).where(or_(CONSOLE_SESSIONS.c.last_seen_at < now - IDLE,
                                                     CONSOLE_SESSIONS.c.created_at < now - MAX_AGE)))
        s.execute(CONSOLE_SESSIONS.insert().values(id=sid, csrf=secrets.token_urlsafe(32), actor=actor,
                                                   token_name=principal.name, scopes=" ".join(sorted(principal.scopes)),
                                                   fingerprint=found.fingerprint, staff_id=found.staff_id,
                                                   created_at=now, last_seen_at=now))
        if found.staff_id is not None:
            staff.signed_in(s, found.staff_id, now)
        audit.record(s, audit.Entry(at=now, token_name=principal.name, actor=actor, method="POST",
                                    path=request.path, status=303, summary=say(AUDIT, "sign_in")))
    await request.config_dict[WRITER].run(start)
    response = see_other("/admin/")
    response.set_cookie(SESSION_COOKIE, raw, path="/admin", httponly=True, samesite="Strict", secure=_secure(request))
    response.del_cookie(LOGIN_COOKIE, path="/admin")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    await _end(request, request[SESSION].id)
    response = see_other("/admin/")
    response.del_cookie(SESSION_COOKIE, path="/admin")
    return response


@web.middleware
async def _guard(request: web.Request, handler: ConsoleHandler) -> web.StreamResponse:
    if request.method == "POST" and request.path == "/admin/login":
        return await handler(request)
    session = await _session(request)
    if session is None:
        if request.method in ("GET", "HEAD"):
            return sign_in_page(request) if request.path in ("/admin", "/admin/") else see_other("/admin/")
        return forbidden(say(CONSOLE, "sign_in_first"))
    request[SESSION], request[ACTOR], request[PRINCIPAL] = session, session.actor, session.principal
    scopes = request.app[ROUTE_SCOPES].get(request.match_info.route)  # None: no such page (404)

    async def answer() -> web.StreamResponse:
        if scopes is not None and not session.principal.may(scopes):
            return refused(request, scopes)
        if request.method == "POST":
            return await _posted(request, handler, session)
        try:
            return await handler(request)
        except web.HTTPNotFound as e:
            return not_found(request, e)
    return await audited(request, answer, principal=session.principal, actor=session.actor, success=303,
                         summary=audit_summary(route_name(request.match_info.handler)))


async def _posted(request: web.Request, handler: ConsoleHandler, session: ConsoleSession) -> web.StreamResponse:
    """A form: its csrf_token checked before the page's handler sees it."""
    if request.content_type == "multipart/form-data":  # only signed-in admins get this far
        request = request.clone(client_max_size=MAX_FORM_BYTES)
    try:
        given = str((await request.post()).get("csrf_token", ""))
    except web.HTTPRequestEntityTooLarge:
        return forbidden(say(CONSOLE, "form_too_large", mib=MAX_FORM_BYTES // 1048576), status=413)
    if not given or not hmac.compare_digest(given, session.csrf):
        await _close_files(request)
        return forbidden(say(CONSOLE, "bad_csrf"))
    try:
        return await handler(request)
    except Refusal as e:
        return _refused_form(request, e)
    finally:
        await _close_files(request)


async def _close_files(request: web.Request) -> None:
    """aiohttp leaves a form's spooled files open; they go when the request is answered."""
    for value in (await request.post()).values():
        if isinstance(value, web.FileField):
            await asyncio.to_thread(value.file.close)


async def live_script(request: web.Request) -> web.Response:
    """live.js: refreshes the parts of a page marked data-live (the CSP allows only our own scripts)."""
    return web.Response(text=await asyncio.to_thread(LIVE_JS.read_text, "utf-8"), content_type="text/javascript",
                        headers=HEADERS)


async def favicon(request: web.Request) -> web.Response:
    """/favicon.ico: the icon of every page, console and public (a PNG, which browsers take there)."""
    return web.Response(body=await asyncio.to_thread(FAVICON.read_bytes), content_type="image/png",
                        headers={"Cache-Control": "public, max-age=86400"})


def create_console_app(tables: Iterable[ConsolePages]) -> web.Application:
    """The console serving the features' pages, each guarded by the scopes its feature declared."""
    app = web.Application(middlewares=[_guard])
    every = scopes_of(ANY)
    app.router.add_post("/login", login)
    route_scopes = {app.router.add_post("/logout", logout): every, app.router.add_get("/live.js", live_script): every}
    page_scopes: dict[str, frozenset[str]] = {}
    for table in tables:
        for r in table:
            if isinstance(r, web.RouteDef):
                route_scopes[app.router.add_route(r.method, r.path, r.handler, **r.kwargs)] = table.scopes[(r.method, r.path)]
                if r.method == "GET":
                    page_scopes[r.path] = table.scopes[(r.method, r.path)]
    app[ROUTE_SCOPES], app[PAGE_SCOPES] = route_scopes, page_scopes
    return app

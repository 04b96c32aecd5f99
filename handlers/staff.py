"""Staff accounts (issue 23, CONTRACT §10): the console's 员工 (/admin/staff), the admin's alone:
the accounts with their roles, whether disabled, their last sign-in; adding one (账号, 密码, roles),
disabling or enabling it, a new password, other roles, a second factor (TOTP) on or off: turned
on, the page shows its secret once, for the person's authenticator app. The rules are domain.staff's, the same for
`distbot staff`; a person's session ends at its next request after such a change (kit.console).
An admin neither disables nor changes the roles of their own account."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from kit.auditing import note
from kit.console import done, page
from kit.feature import Feature
from kit.scopes import principal_of, token_names
from kit.app_keys import CLOCK, READER, WRITER
from kit.live_settings import live_config
from domain import staff
from domain.config_sections import SCOPES

feature = Feature("staff", scope="admin")
ID = r"{id:\d{1,9}}"


def _acting(request: web.Request) -> str:
    """The signed-in person's account name ("" for a token's session: it owns no account)."""
    principal = principal_of(request)
    return principal.name if principal is not None and principal.person else ""


async def _hashed(form: Any) -> str:
    password = staff.checked_password(str(form.get("password", "")))
    return await asyncio.to_thread(staff.hash_password, password)  # ~50 ms of CPU


@feature.console.get("/staff")
async def staff_page(request: web.Request) -> web.Response:
    return await _page(request)


async def _page(request: web.Request, enrolled: dict[str, str] | None = None) -> web.Response:
    """The accounts and the add form; `enrolled`: the secret of a second factor just turned on."""
    rows = await request.config_dict[READER].run(staff.accounts)
    return page(request, "staff.html", title="员工", current="/staff", accounts=rows, scopes=SCOPES,
                role_names=staff.ROLE_NAMES, acting=_acting(request), min_password=staff.MIN_PASSWORD,
                enrolled=enrolled)


@feature.console.post("/staff")
async def add_form(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = staff.checked_name(str(form.get("name", "")), token_names(live_config(request.config_dict)))
    roles = staff.checked_roles(str(r) for r in form.getall("roles", []))
    password_hash, now = await _hashed(form), request.config_dict[CLOCK].now()
    staff_id = await request.config_dict[WRITER].run(lambda s: staff.add(s, name, password_hash, roles, now))
    note(request, object_id=staff_id)
    return done(request, "/staff", f"已添加员工“{name}”（{staff.role_names(roles.split())}）。")


async def _state(request: web.Request, disabled: bool) -> web.StreamResponse:
    staff_id, acting = int(request.match_info["id"]), _acting(request)
    found = await request.config_dict[WRITER].run(lambda s: staff.set_disabled(s, staff_id, disabled, acting))
    return done(request, "/staff", f"已{'停用' if disabled else '启用'}员工“{found.name}”。")


@feature.console.post(f"/staff/{ID}/disable")
async def disable_form(request: web.Request) -> web.StreamResponse:
    return await _state(request, True)


@feature.console.post(f"/staff/{ID}/enable")
async def enable_form(request: web.Request) -> web.StreamResponse:
    return await _state(request, False)


@feature.console.post(f"/staff/{ID}/password")
async def password_form(request: web.Request) -> web.StreamResponse:
    staff_id, password_hash = int(request.match_info["id"]), await _hashed(await request.post())
    found = await request.config_dict[WRITER].run(lambda s: staff.set_password(s, staff_id, password_hash))
    return done(request, "/staff", f"已为员工“{found.name}”设置新密码。")


@feature.console.post(f"/staff/{ID}/roles")
async def roles_form(request: web.Request) -> web.StreamResponse:
    staff_id, acting, form = int(request.match_info["id"]), _acting(request), await request.post()
    roles = staff.checked_roles(str(r) for r in form.getall("roles", []))
    found = await request.config_dict[WRITER].run(lambda s: staff.set_roles(s, staff_id, roles, acting))
    return done(request, "/staff", f"员工“{found.name}”的角色改为{staff.role_names(roles.split())}。")


@feature.console.post(f"/staff/{ID}/totp")
async def totp_on_form(request: web.Request) -> web.StreamResponse:
    """A new secret, shown once on the answer (not a redirect: it is in no cookie, log or audit row)."""
    staff_id, secret = int(request.match_info["id"]), staff.new_totp_secret()
    found = await request.config_dict[WRITER].run(lambda s: staff.set_totp(s, staff_id, secret))
    note(request, f"已为员工“{found.name}”开启两步验证。")
    return await _page(request, {"name": found.name, "secret": secret, "uri": staff.totp_uri(found.name, secret)})


@feature.console.post(f"/staff/{ID}/totp/off")
async def totp_off_form(request: web.Request) -> web.StreamResponse:
    staff_id = int(request.match_info["id"])
    found = await request.config_dict[WRITER].run(lambda s: staff.set_totp(s, staff_id, None))
    return done(request, "/staff", f"已关闭员工“{found.name}”的两步验证。")

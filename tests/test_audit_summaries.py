"""Every route that changes something (/api's POST/PUT/PATCH/DELETE, every console POST) has its
Chinese summary in domain.catalogue.AUDIT, so the 审计 page never shows a handler's name. Built
from the app's own router, without a database: a route added tomorrow is checked too."""

from __future__ import annotations

import re

from app.factory import create_app
from domain.catalogue import AUDIT, audit_summary
from kit.auditing import MUTATING, route_name
from tests.conftest import make_config

CHINESE = re.compile(r"[\u4e00-\u9fff]")


def test_every_mutating_route_has_a_chinese_audit_summary() -> None:
    app = create_app(make_config("sqlite+aiosqlite:///unused.db"), workers=False)  # never started
    audited: dict[tuple[str, str], str] = {}
    for route in app.router.routes():  # the /api and /admin sub-applications' routes included
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in MUTATING and path.startswith(("/api/", "/admin/")):
            audited[route.method, path] = route_name(route.handler)
    # the walk reaches both sub-applications (an /api route and a console form, each by its handler's name)
    assert audited["POST", "/api/contests/{id}/end"] == "end_contest_api", audited
    assert audited["POST", "/admin/contests/{id}/end"] == "end_contest_page", audited
    missing = [f"{method} {path} ({name})" for (method, path), name in sorted(audited.items())
               if not CHINESE.search(audit_summary(name))]
    assert not missing, ("add these routes' handler names to domain.catalogue.AUDIT with a Chinese summary "
                         "(what an admin reads on the 审计 page): " + ", ".join(missing))
    assert all(CHINESE.search(summary) for summary in AUDIT.values()), AUDIT

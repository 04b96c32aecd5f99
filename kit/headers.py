"""Headers every response carries (CONTRACT §7): a Content-Security-Policy, nosniff and a
Referrer-Policy unless the route set its own, HSTS when the public URL is https, and no `Server`
header naming aiohttp and Python. One `on_response_prepare` signal of the app factory, so the
sub-apps (/api, /admin, /sandbox), the webhook, 404s and errors are covered alike."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs, web

from domain.config import Config

HSTS = "max-age=31536000"


def content_policy(*, scripts: Iterable[str] = (), connect: Iterable[str] = ()) -> str:
    """The pages' policy: scripts only from our origin (plus `scripts`: hashes such as
    "'sha256-…'" or origins), inline styles, pictures from anywhere on the web, no plugins, no
    framing, forms and fetches to our origin (plus `connect`)."""
    return "; ".join((
        "default-src 'self'",
        " ".join(("script-src 'self'", *scripts)),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: https: http:",
        " ".join(("connect-src 'self'", *connect)),
        "object-src 'none'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'"))


PAGE_POLICY = content_policy()
DEFAULTS = {"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin"}


def install(app: web.Application, config: Config) -> None:
    """Add the signal to the app (before it starts)."""
    defaults = dict(DEFAULTS)
    if config.server.public_url.startswith("https://"):
        defaults["Strict-Transport-Security"] = HSTS

    async def secure(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.popall(hdrs.SERVER, None)
        for name, value in defaults.items():
            response.headers.setdefault(name, value)

    app.on_response_prepare.append(secure)

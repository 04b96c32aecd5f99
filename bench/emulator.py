"""The sandbox WeChat API as a process of its own for benchmarks, with a network's latency.

    .venv/bin/python bench/emulator.py --port P [--latency 0.003] [--followers N]

`--followers` openids `obench0000000000`... follow the account and talked to it just now. Besides
WeChat's endpoints under /cgi-bin/, GET /bench/stats answers how many customer-service messages
arrived and when the first and the last did (time.monotonic of this machine); POST /bench/reset
clears the count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.platform import Platform  # noqa: E402
from sandbox.routes import create_sandbox_app  # noqa: E402


def follower_openid(i: int) -> str:
    return f"obench{i:010d}"


def build(latency: float, followers: int) -> web.Application:
    platform = Platform(app_id="wxsandbox0000000000", app_secret="sandbox-secret", token="bench-token")
    platform.latency = latency
    now = platform.clock()
    for i in range(followers):
        user = platform.user(follower_openid(i))
        user.subscribed, user.last_interaction = True, now
    sent_at: list[float] = []
    original = platform.custom_send

    def custom_send(body: dict[str, Any]) -> None:
        original(body)
        sent_at.append(time.monotonic())
        platform.users[body["touser"]].timeline.clear()  # keep the emulator's memory flat
        platform.calls.clear()
    platform.custom_send = custom_send  # type: ignore[method-assign]

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"sends": len(sent_at), "first": sent_at[0] if sent_at else None,
                                  "last": sent_at[-1] if sent_at else None})

    async def reset(request: web.Request) -> web.Response:
        sent_at.clear()
        return web.json_response({"ok": True})

    app = web.Application()
    app.add_subapp("/sandbox", create_sandbox_app(platform))
    app.router.add_get("/bench/stats", stats)
    app.router.add_post("/bench/reset", reset)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency", type=float, default=0.003)
    p.add_argument("--followers", type=int, default=0)
    args = p.parse_args()
    web.run_app(build(args.latency, args.followers), host="127.0.0.1", port=args.port, access_log=None,
                print=None)


if __name__ == "__main__":
    main()

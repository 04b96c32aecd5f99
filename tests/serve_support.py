"""Real `distbot serve` processes for tests that kill them: started with a config file, waited for
on /healthz, stopped with SIGKILL (a crash) or SIGTERM (a deploy)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from devtools.ports import free_port, listens
from tests.conftest import ADMIN_TOKEN
from tests.eventually import eventually

DISTBOT = str(Path(sys.executable).parent / "distbot")


class PortTaken(Exception):
    """The port free_port() gave was taken before `distbot serve` bound it."""


class Served:
    """One `distbot serve` subprocess on a free port."""

    def __init__(self, config: Path, cwd: Path, env: dict[str, str] | None = None):
        self.config, self.cwd, self.env = config, cwd, env or {}
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.log = cwd / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30) -> Served:
        """Start it and wait for /healthz; on another port when another test took this one
        between free_port() and the server's bind (tests run in parallel)."""
        for _ in range(3):
            try:
                return await self._start(timeout)
            except PortTaken:
                self.port = free_port()
        raise AssertionError("no free port for distbot serve in three tries")

    async def _start(self, timeout: float) -> Served:
        out = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            DISTBOT, "serve", "--config", str(self.config), "--port", str(self.port), cwd=self.cwd,
            stdout=out, stderr=out, env={**os.environ, **self.env})
        out.close()
        async with aiohttp.ClientSession() as http:
            async def healthy() -> bool:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    told = self.log.read_text(errors="replace")[-3000:]
                    if f"cannot listen on 127.0.0.1:{self.port}" in told:
                        raise PortTaken(self.port)
                    raise AssertionError(told)
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        return resp.status == 200 and listens(self.proc.pid, self.port)
                except aiohttp.ClientConnectionError:
                    return False
            try:
                await eventually(healthy, timeout, what="distbot serve comes up")
            except AssertionError:
                await self.kill()  # never healthy: not left running after the test
                raise
        return self

    async def kill(self) -> None:
        """kill -9: no cleanup of any kind."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                await self.kill()

    async def api(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.request(
                method, self.url + "/api" + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kw) as resp:
            return resp.status, await resp.json(content_type=None)

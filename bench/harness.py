"""Process and measurement helpers shared by the bench scripts (not a benchmark itself).

- measuring processes through /proc: `cpu_seconds` (one process), `tree_cpu` (a process and its
  direct children), `machine_cpu`, `peak_rss_mb` (VmHWM), `rss_mb` (VmRSS); `free_port` and `listens`
  (devtools.ports, here for the scripts);
- `Server`: `distbot serve` as a subprocess (sandbox mode, a free port, the given database), the
  way bench/orders.py, broadcast.py and exports.py run it;
- `spawn` / `stop` / `stop_all` / `wait_healthy`: bench/webhook.py's children, each in its own
  session, SIGTERMed if the bench process dies however it dies, all stopped at the end;
- databases: `pg_server` / `pg_database` (a PostgreSQL server from --pg-url or a throw-away
  cluster, a fresh database on it per run; `statement_calls` reads pg_stat_statements, which the
  throw-away cluster loads on request), `create_database` / `drop_databases`, and
  `Databases` (webhook.py's and orders.py's fresh SQLite file or PostgreSQL database per run, removed
  at the end).

Nothing heavy is imported at module level (aiohttp, asyncpg and devtools only when used), so the
load client (bench/load_client.py) can use the CPU helpers and stay a light process. The scripts
import it as `bench.harness`, with the repository's root on sys.path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devtools.ports import free_port, listens

TOKEN = "bench-token"
ADMIN = "bench-admin-token"
STARTUP_TIMEOUT = 60.0
FREEZE_DAYS = 7  # the servers' distribution.freeze_days (and the naive orders app's)


def interrupt(*_: Any) -> None:
    """A signal handler: raise KeyboardInterrupt."""
    raise KeyboardInterrupt


# ---- measuring ----------------------------------------------------------------------------------
def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (fields[1] is the parent's pid)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _cpu_of(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    return _cpu_of(_stat_fields(pid))


def tree_cpu(root: int) -> float:
    """CPU seconds of process `root` and its direct children (a PostgreSQL postmaster's backends)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(entry)
        except OSError:
            continue
        if int(entry) == root or int(fields[1]) == root:
            total += _cpu_of(fields)
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """The process's resident memory high-water mark (VmHWM), MB."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float:
    """The process's resident memory now (VmRSS), MB."""
    return _status_mb(pid, "VmRSS:")


# ---- `distbot serve` for orders.py, broadcast.py, exports.py -------------------------------------
class Server:
    def __init__(self, workdir: Path, db_url: str, profile: Path | None = None, outbox_rate: float | None = None,
                 api_base_url: str = "", outbox_batch: int | None = None, risk: bool = True, extra: str = ""):
        self.profile = profile
        self.port = free_port()
        self.db_url = db_url
        self.config = workdir / "config.toml"
        self.log = workdir / "distbot.log"
        self.config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\n'
            f'[wechat]\nmode = "sandbox"\ntoken = "{TOKEN}"\napi_base_url = "{api_base_url}"\n'
            'template_id = "tmpl-bench"\n'
            f'[database]\nurl = "{db_url}"\n[admin]\ntoken = "{ADMIN}"\n'
            f'[risk]\nenabled = {"true" if risk else "false"}\n'
            f'[distribution]\nmax_levels = 2\nfreeze_days = {FREEZE_DAYS}\n[outbox]\n'
            + (f'rate_per_second = {outbox_rate}\n' if outbox_rate else "")
            + (f'batch_size = {outbox_batch}\n' if outbox_batch else "") + extra, encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        import aiohttp
        exe = Path(sys.executable).parent / "distbot"
        cmd = [str(exe), "serve", "--config", str(self.config)]
        if self.profile is not None:  # py-spy's collapsed stacks of the server, for flame graphs
            cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", "200", "--gil",
                   "-o", str(self.profile), "--", *cmd]
        self.proc = subprocess.Popen(cmd, cwd=self.config.parent,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if self.proc.poll() is not None:
                    raise SystemExit(f"distbot exited:\n{self.log.read_text()[-3000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.url("/healthz")) as r:
                        if r.status == 200 and listens(self.proc.pid, self.port):
                            return
                await asyncio.sleep(0.1)
        raise SystemExit("distbot did not become healthy")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.profile else signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Emulator:
    """bench/emulator.py as its own process: the WeChat side, which in production is not distbot's
    CPU, must not share a core with the client or be counted as the server's (broadcast.py, orders.py)."""

    def __init__(self, latency: float, followers: int):
        self.port = free_port()
        self.args = ["--port", str(self.port), "--latency", str(latency), "--followers", str(followers)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/sandbox/cgi-bin/"

    async def start(self) -> None:
        import aiohttp
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "emulator.py"), *self.args])
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{self.port}/bench/stats") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise SystemExit("the emulator did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    async def rate(self) -> float:
        """Customer-service sends per second as WeChat saw them, first to last; then the count restarts."""
        import aiohttp
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.port}/bench/stats") as r:
                s = await r.json()
            await http.post(f"http://127.0.0.1:{self.port}/bench/reset")
        return (s["sends"] - 1) / (s["last"] - s["first"]) if s["sends"] > 1 else 0.0


# ---- webhook.py's children: own session, die with the bench, all stopped at the end --------------
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the bench process dies, however it dies."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(args: list[str], *, log: Path | None = None, cwd: Path | None = None, stdin: int | None = None,
          stdout: int | None = None, env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTBOT_")}
    env.update(env_extra or {})
    out = open(log, "ab") if log is not None else None  # noqa: SIM115 (the child keeps its own copy)
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=stdin, stdout=stdout if stdout is not None else out,
                            stderr=out, start_new_session=True, preexec_fn=_die_with_parent)
    if out is not None:
        out.close()
    _CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)  # aiohttp's run_app and the client stop cleanly on SIGINT
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    with contextlib.suppress(ValueError):
        _CHILDREN.remove(proc)


def stop_all(grace: float = 5.0) -> None:
    """Stop every child at once: SIGINT, SIGKILL after `grace`."""
    procs = [p for p in _CHILDREN if p.poll() is None]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    _CHILDREN.clear()


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path | None) -> None:
    import aiohttp
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with status {proc.returncode}\n{log_tail(log) if log else ''}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"http://127.0.0.1:{port}/healthz",
                                    timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200 and listens(proc.pid, port):
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"no healthy /healthz on port {port} within {STARTUP_TIMEOUT:.0f} s\n"
                       f"{log_tail(log) if log else ''}")


# ---- databases -----------------------------------------------------------------------------------
def pg_cluster(statements: bool = False) -> Any:
    """A throw-away PostgreSQL cluster from the machine's binaries, started (devtools.pgcluster); None
    without the binaries. The caller stops it. `statements`: with pg_stat_statements loaded (a
    restart), so that a bench can count the statements each database received (`statement_calls`)."""
    from devtools.pgcluster import PgCluster, find_pg_bin
    if find_pg_bin() is None:
        return None
    cluster = PgCluster()
    cluster.start()
    if statements:
        with (cluster.dir / "data" / "postgresql.conf").open("a") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.max = 20000\n")
        subprocess.run([*cluster.as_user, str(cluster.bindir / "pg_ctl"), "-D", str(cluster.dir / "data"), "-w",
                        "-l", str(cluster.dir / "log"), "restart"], check=True, stdout=subprocess.DEVNULL)
    return cluster


async def statement_calls(server_url: str, database: str) -> dict[str, int] | None:
    """What pg_stat_statements counted so far for `database` (None when it is not loaded):
    statements (calls, utility statements included) and transactions (their BEGINs). Read from
    the server's maintenance database, so this query is not counted."""
    import asyncpg
    conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        if not await conn.fetchval("SELECT 'pg_stat_statements' = ANY(string_to_array("
                                   "current_setting('shared_preload_libraries'), ', '))"):
            return None
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        row = await conn.fetchrow(
            "SELECT coalesce(sum(calls), 0) AS statements,"
            " coalesce(sum(calls) FILTER (WHERE query ~* '^\\s*(BEGIN|START)'), 0) AS transactions"
            " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)", database)
        return {"statements": int(row["statements"]), "transactions": int(row["transactions"])}
    finally:
        await conn.close()


async def create_database(server_url: str, name: str) -> None:
    """CREATE DATABASE `name` on the server of a postgresql+asyncpg:// URL."""
    import asyncpg
    conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_databases(server_url: str, names: list[str]) -> None:
    """DROP DATABASE ... WITH (FORCE) of each of `names` on the server of a postgresql+asyncpg:// URL."""
    import asyncpg
    conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def pg_server(args: Any, stack: contextlib.ExitStack) -> str | None:
    """The PostgreSQL server's URL: --pg-url, else a throw-away cluster (None without binaries)."""
    if args.pg_url is not None:
        return str(args.pg_url)
    cluster = pg_cluster()
    if cluster is None:
        return None
    stack.callback(cluster.stop)
    return str(cluster.url)


async def pg_database(url: str) -> str:
    """A fresh database on the server, for one run."""
    name = "bench_" + secrets.token_hex(4)
    await create_database(url, name)
    return url.rsplit("/", 1)[0] + "/" + name


class Databases:
    """Hands out a fresh database URL per distbot run and removes them at the end."""

    def __init__(self, kind: str, url: str | None, workdir: Path, statements: bool = False):
        self.kind, self.workdir, self.statements = kind, workdir, statements  # statements: see pg_cluster
        self.server_url = url
        self.cluster: Any = None
        self.created: list[str] = []

    def server_pid(self) -> int | None:
        """The postmaster of the throw-away cluster (its CPU is the database's), else None."""
        if self.cluster is None:
            return None
        try:
            return int((self.cluster.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def describe(self) -> str:
        return "SQLite (file, WAL)" if self.kind == "sqlite" else "PostgreSQL"

    async def fresh(self, name: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite+aiosqlite:///{self.workdir / (name + '.db')}"
        if self.server_url is None:
            self.cluster = pg_cluster(self.statements)
            if self.cluster is None:
                raise SystemExit("--db postgresql without a URL needs PostgreSQL binaries (initdb) on this machine")
            self.server_url = self.cluster.url
        db = f"bench_{name}_{secrets.token_hex(4)}"
        await create_database(self.server_url, db)
        self.created.append(db)
        base, _, query = self.server_url.partition("?")
        return base.rsplit("/", 1)[0] + "/" + db + (("?" + query) if query else "")

    async def cleanup(self) -> None:
        if self.kind != "postgresql" or self.server_url is None:
            return
        try:
            await drop_databases(self.server_url, self.created)
        finally:
            if self.cluster is not None:
                self.cluster.stop()

"""Webhook throughput and latency of distbot against a minimal aiohttp + wechatpy echo app.

    .venv/bin/python bench/webhook.py [--seconds 10] [--concurrency 50] [--mode plain|safe|both]
                                      [--db sqlite | --db postgresql [URL]] [--users 200]
                                      [--texts 帮助 收益] [--rounds 1] [--src DIR] [--profile DIR] [--keep]

For each mode (plain: no EncodingAESKey; safe: AES):
  1. `distbot serve --config <tmp>/config.toml` (sandbox mode, SQLite file in a temp dir or a
     fresh PostgreSQL database) starts, waited for on /healthz; N simulated users follow and
     register through the webhook itself (subscribe, 注册, phone, name: each must come back with
     a distributor code, and /api/distributors must list them);
  2. bench/baseline_app.py starts as its own process and takes the load (distbot idles);
  3. distbot takes the same load.
The load comes from a separate client process, bench/load_client.py (raw HTTP/1.1 keep-alive
over asyncio streams, one connection per concurrent sender, closed loop): signed (and in safe
mode encrypted) text messages, a unique MsgId each, from the seeded users, "帮助" or "收益". After
the run every response is checked off the clock: HTTP 200, XML, (safe: MsgSignature and
decryption), a text reply addressed to its sender. The client also samples its own CPU, the
server's and the machine's, so you can see which side was the limit (these machines have 2
cores) and whether something else was running. See bench/README.md.

The processes and databases are bench/harness.py's (spawn, stop_all, wait_healthy, Databases).
Only 127.0.0.1 is used; every process started here is stopped on exit, Ctrl-C and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    ADMIN, TOKEN, Databases, free_port, interrupt, log_tail, spawn, stop, stop_all, wait_healthy,
)
from bench.load_client import REQUEST_TIMEOUT, Wire  # noqa: E402

APP_ID = "wxbench000000000001"
TEXTS = ("帮助", "收益")
TARGET_RATIO = 0.5
TARGET_P99_MS = 100.0
NOISE_CORES = 0.3  # CPU used by other processes above which a run is flagged as disturbed
CODE = re.compile(r"推广码[：:]\s*([A-HJ-NP-Z2-9]{6})")


# ---- one mode: baseline and distbot under the same load ----------------------------------------
@dataclass
class Run:
    name: str
    result: dict[str, Any]
    batch_mean: float | None = None


def distbot_config(port: int, aes_key: str, db_url: str) -> str:
    return f"""\
[server]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"

[wechat]
mode = "sandbox"
app_id = "{APP_ID}"
token = "{TOKEN}"
encoding_aes_key = "{aes_key}"

[database]
url = "{db_url}"

[admin]
token = "{ADMIN}"
"""


async def seed_users(port: int, wire: Wire, openids: list[str], concurrency: int) -> None:
    """The users follow and register through the webhook, each getting a distributor code."""
    import aiohttp
    n = len(openids)
    run = secrets.randbelow(10000)
    msg_ids = iter(range(time.time_ns() // 1000, 2**62))
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def post(http: aiohttp.ClientSession, openid: str, path: str, body: bytes) -> str:
        async with http.post(f"http://127.0.0.1:{port}{path}", data=body,
                             headers={"Content-Type": "text/xml"},
                             timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as r:
            data = await r.read()
            if r.status != 200:
                raise ValueError(f"HTTP {r.status}: {data[:100]!r}")
            return wire.open_reply(data, openid)

    async def register(http: aiohttp.ClientSession, i: int, openid: str) -> None:
        phone = f"1{3 + i % 7}{run:04d}{i:05d}"
        async with sem:
            try:
                await post(http, openid, *wire.event(openid, "subscribe", int(time.time())))
                await post(http, openid, *wire.text(openid, "注册", next(msg_ids)))
                await post(http, openid, *wire.text(openid, phone, next(msg_ids)))
                done = await post(http, openid, *wire.text(openid, "测试员", next(msg_ids)))
                if not CODE.search(done):
                    raise ValueError(f"no distributor code in the last reply: {done[:80]!r}")
            except Exception as e:  # collected and reported below
                failures.append(f"{openid}: {type(e).__name__}: {e}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        await asyncio.gather(*(register(http, i, o) for i, o in enumerate(openids)))
        if failures:
            raise RuntimeError(f"{len(failures)} of {n} registrations failed, e.g. {failures[0]}")
        # Registration is real: the admin API must list them.
        async with http.get(f"http://127.0.0.1:{port}/api/distributors",
                            headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            total = (await r.json()).get("total") if r.status == 200 else None
        if total is not None and total < n:
            raise RuntimeError(f"the admin API lists {total} distributors after {n} registrations")


async def batch_stats(port: int) -> tuple[float, float]:
    """(updates, group commits) so far, from distbot's /metrics; zeros when it does not say."""
    import aiohttp
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return 0.0, 0.0
    s = re.search(r"^distbot_batch_updates_sum ([0-9.e+]+)$", text, re.M)
    c = re.search(r"^distbot_batch_updates_count ([0-9.e+]+)$", text, re.M)
    return (float(s.group(1)), float(c.group(1))) if s and c else (0.0, 0.0)


def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    proc = spawn([sys.executable, str(HERE / "load_client.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    timeout = spec["warmup"] + spec["seconds"] + REQUEST_TIMEOUT + 120
    try:
        out, _ = proc.communicate(json.dumps(spec).encode(), timeout=timeout)
    finally:
        stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed with status {proc.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


def load_spec(args: argparse.Namespace, port: int, pid: int, aes_key: str, openids: list[str],
              db_pid: int | None = None) -> dict[str, Any]:
    return {"port": port, "server_pid": pid, "db_pid": db_pid, "token": TOKEN, "aes_key": aes_key, "app_id": APP_ID,
            "openids": openids, "seconds": args.seconds, "warmup": args.warmup,
            "concurrency": args.concurrency, "msg_id_base": time.time_ns() // 1000, "texts": args.texts}


async def profile_during(pid: int, args: argparse.Namespace, out: Path) -> subprocess.Popen[bytes] | None:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("  (--profile: py-spy not found; `.venv/bin/pip install py-spy`)", flush=True)
        return None
    return spawn([pyspy, "record", "--pid", str(pid), "--rate", "200", "--duration",
                  str(int(args.warmup + args.seconds)), "--format", "raw", "-o", str(out)],
                 log=out.with_suffix(".log"))


def distbot_command(args: argparse.Namespace, config: Path) -> tuple[list[str], dict[str, str]]:
    if args.src is not None:  # another checkout (e.g. a git worktree) with this venv's packages
        cli = "app.cli" if (args.src / "app" / "cli.py").is_file() else "bot.cli"  # an older tree: bot/
        return [sys.executable, "-m", cli, "serve", "--config", str(config)], {"PYTHONPATH": str(args.src)}
    distbot = shutil.which("distbot", path=str(Path(sys.executable).parent)) or "distbot"
    return [distbot, "serve", "--config", str(config)], {}


async def bench_mode(mode: str, args: argparse.Namespace, workdir: Path, dbs: Databases) -> tuple[Run, Run]:
    aes_key = base64.b64encode(os.urandom(32)).decode().rstrip("=") if mode == "safe" else ""
    wire = Wire(TOKEN, aes_key, APP_ID)
    tag = secrets.token_hex(3)
    openids = [f"obench{tag}{i:05d}" for i in range(args.users)]

    # distbot: start, register the users through the webhook.
    port = free_port()
    db_url = await dbs.fresh(f"{mode}_{tag}")
    config = workdir / f"distbot-{mode}.toml"
    config.write_text(distbot_config(port, aes_key, db_url), encoding="utf-8")
    log = workdir / f"distbot-{mode}.log"
    cmd, env = distbot_command(args, config)
    server = spawn(cmd, log=log, cwd=workdir, env_extra=env)
    base_runs: list[dict[str, Any]] = []
    runs: list[tuple[dict[str, Any], float | None]] = []
    try:
        await wait_healthy(port, server, log)
        t = time.perf_counter()
        await seed_users(port, wire, openids, args.concurrency)
        print(f"  {mode}: {len(openids)} users followed and registered through the webhook "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        await asyncio.sleep(1.0)  # let start-up work (menu push, scheduler) settle

        for rnd in range(args.rounds):
            # The baseline (distbot idles meanwhile), then distbot, under the same load.
            bport = free_port()
            blog = workdir / f"baseline-{mode}.log"
            baseline = spawn([sys.executable, str(HERE / "baseline_app.py"), "--port", str(bport), "--token", TOKEN,
                              "--app-id", APP_ID] + (["--aes-key", aes_key] if aes_key else []), log=blog, cwd=workdir)
            try:
                await wait_healthy(bport, baseline, blog)
                base_runs.append(run_client(load_spec(args, bport, baseline.pid, aes_key, openids)))
            finally:
                stop(baseline)

            spy = None
            if args.profile and rnd == 0:
                args.profile.mkdir(parents=True, exist_ok=True)
                spy = await profile_during(server.pid, args, args.profile / f"distbot-{mode}.folded")
            before = await batch_stats(port)
            result = run_client(load_spec(args, port, server.pid, aes_key, openids, dbs.server_pid()))
            after = await batch_stats(port)
            if spy is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(30)
                stop(spy)
            mean = (after[0] - before[0]) / (after[1] - before[1]) if after[1] > before[1] else None
            runs.append((result, mean))
            print(f"  {mode} round {rnd + 1}: baseline {base_runs[-1]['rps']:.0f} req/s, "
                  f"distbot {result['rps']:.0f} req/s", flush=True)
    finally:
        stop(server)
    if server.returncode not in (0, -signal.SIGINT):
        print(f"  {mode}: distbot exited with status {server.returncode}; log tail:\n{log_tail(log)}", flush=True)
    # With several rounds, show each server's median round by throughput.
    base = sorted(base_runs, key=lambda r: r["rps"])[(len(base_runs) - 1) // 2]
    dist, mean = sorted(runs, key=lambda r: r[0]["rps"])[(len(runs) - 1) // 2]
    base["all_rps"] = [r["rps"] for r in base_runs]
    dist["all_rps"] = [r["rps"] for r, _ in runs]
    return Run("baseline", base), Run("distbot", dist, mean)


# ---- the table -----------------------------------------------------------------------------------
def _errors(r: dict[str, Any]) -> str:
    return str(sum(r["errors"].values())) if r["errors"] else "0"


def _db_cpu(r: dict[str, Any]) -> str:
    return f"{r['db_cpu']:.0%}" if r.get("db_cpu") else "-"


def other_cpu(r: dict[str, Any]) -> float:
    """CPU (in cores) used by everything but the server and the load client: noise."""
    if "machine_busy" not in r:
        return float("nan")
    return max(0.0, r["machine_busy"] * (os.cpu_count() or 1) - r["server_cpu"] - r["client_cpu"]
               - r.get("db_cpu", 0.0))


def report(results: dict[str, tuple[Run, Run]], args: argparse.Namespace, db: str) -> str:
    lines = [f"webhook bench: {args.seconds:g} s per run after {args.warmup:g} s warm-up, concurrency "
             f"{args.concurrency}, {args.users} registered users, texts {'/'.join(args.texts)}, {db}, "
             f"{os.cpu_count()} CPUs",
             "",
             f"{'mode':<6} {'server':<9} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
             f"{'errors':>7} {'answered':>9} {'srv CPU':>8} {'µs/req':>7} {'cli CPU':>8} {'db CPU':>7} {'other':>8}"]
    for mode, runs in results.items():
        for run in runs:
            r = run.result
            lines.append(f"{mode:<6} {run.name:<9} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} "
                         f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {_errors(r):>7} {r['answered']:>9} "
                         f"{r.get('server_cpu', float('nan')):>8.0%} {r.get('server_us_per_req', float('nan')):>7.0f} "
                         f"{r.get('client_cpu', float('nan')):>8.0%} "
                         f"{_db_cpu(r):>7} "
                         f"{other_cpu(r):>8.0%}")
    lines.append("")
    for mode, (base, dist) in results.items():
        ratio = dist.result["rps"] / base.result["rps"] if base.result["rps"] else float("nan")
        p99 = dist.result["p99_ms"]
        verdict = "OK" if ratio >= TARGET_RATIO and p99 < TARGET_P99_MS and not dist.result["errors"] else "MISSED"
        batch = f", {dist.batch_mean:.1f} updates per group commit" if dist.batch_mean else ""
        cpu_ratio = base.result.get("server_us_per_req", float("nan")) / dist.result.get("server_us_per_req", float("nan"))
        lines.append(f"{mode}: distbot/baseline = {ratio:.2f}x throughput, distbot p99 {p99:.1f} ms "
                     f"(target >= {TARGET_RATIO}x, p99 < {TARGET_P99_MS:.0f} ms): {verdict}{batch}")
        lines.append(f"{mode}: server CPU per request baseline/distbot = {cpu_ratio:.2f}x (the throughput ratio to "
                     "expect when both are CPU-bound on a quiet machine)")
    for mode, runs in results.items():
        for run in runs:
            for kind, count in run.result["errors"].items():
                lines.append(f"  {mode} {run.name} error: {kind} x{count}")
    if args.rounds > 1:
        for mode, runs in results.items():
            for run in runs:
                lines.append(f"  {mode} {run.name} req/s by round: "
                             + ", ".join(f"{x:.0f}" for x in run.result["all_rps"]) + " (median round shown)")
    lines.append("srv/cli CPU: cores used by the server / the load client during the measured window; µs/req: "
                 "server CPU time per answered request; db CPU: the throw-away PostgreSQL cluster's cores; "
                 "other: cores used by anything else on the machine (a PostgreSQL server given by URL counts here).")
    noisy = [f"{m} {run.name}" for m, runs in results.items() for run in runs if other_cpu(run.result) > NOISE_CORES]
    if noisy:
        lines.append(f"WARNING: other processes used more than {NOISE_CORES} of a core during: {', '.join(noisy)}; "
                     "req/s and latency are disturbed there (µs/req much less so). Re-run on a quiet machine "
                     "or with --rounds.")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="distbot-bench-"))
    db_kind = "sqlite" if args.db[0] == "sqlite" else "postgresql"
    dbs = Databases(db_kind, args.db[1] if len(args.db) > 1 else None, workdir)
    results: dict[str, tuple[Run, Run]] = {}
    try:
        modes = ["plain", "safe"] if args.mode == "both" else [args.mode]
        for mode in modes:
            print(f"{mode} mode ...", flush=True)
            results[mode] = await bench_mode(mode, args, workdir, dbs)
        print()
        print(report(results, args, dbs.describe()))
        if args.profile:
            print(f"\npy-spy profiles (collapsed stacks; speedscope.app and flamegraph.pl read them) in {args.profile}; the figures above include its overhead")
        return 0
    finally:
        stop_all()
        await dbs.cleanup()
        if args.keep:
            print(f"logs and databases kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="distbot webhook throughput and latency against a minimal "
                                            "aiohttp + wechatpy echo app")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (default 10)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run (default 1)")
    p.add_argument("--concurrency", type=int, default=50, help="concurrent senders / connections (default 50)")
    p.add_argument("--mode", choices=("plain", "safe", "both"), default="both")
    p.add_argument("--db", nargs="+", default=["sqlite"], metavar="KIND [URL]",
                   help="sqlite (default) or postgresql [postgresql+asyncpg://user@host:port/db]: a fresh "
                        "database is created on that server per run and dropped at the end; without a URL a "
                        "throw-away cluster is started from the machine's PostgreSQL binaries")
    p.add_argument("--texts", nargs="+", default=list(TEXTS), metavar="TEXT",
                   help="what the users say, in turn (default: 帮助 收益)")
    p.add_argument("--users", type=int, default=200, help="users registered through the webhook (default 200)")
    p.add_argument("--rounds", type=int, default=1,
                   help="alternate baseline and distbot this many times; the median round is shown (default 1)")
    p.add_argument("--src", type=Path, help="run distbot from this source tree (e.g. a git worktree) instead of the "
                                            "installed one, with this venv's packages")
    p.add_argument("--profile", type=Path, help="record a py-spy profile (collapsed stacks) of distbot into this directory")
    p.add_argument("--keep", action="store_true", help="keep the temp directory (configs, logs, SQLite files)")
    args = p.parse_args(argv)
    if args.src is not None:
        args.src = args.src.resolve()
        if not any((args.src / top / "cli.py").is_file() for top in ("app", "bot")):
            p.error(f"--src {args.src} is not a distbot source tree (no app/cli.py)")
    if args.db[0] not in ("sqlite", "postgresql") or len(args.db) > 2 or (args.db[0] == "sqlite" and len(args.db) > 1):
        p.error("--db takes sqlite, or postgresql with an optional postgresql+asyncpg:// URL")
    if len(args.db) == 2 and not args.db[1].startswith("postgresql+asyncpg://"):
        p.error("the PostgreSQL URL must start with postgresql+asyncpg://")
    if not (0 < args.seconds <= 600 and 0 <= args.warmup <= 60 and 1 <= args.concurrency <= 1000
            and 1 <= args.users <= 100_000 and 1 <= args.rounds <= 20):
        p.error("out of range: 0 < --seconds <= 600, --warmup <= 60, 1 <= --concurrency <= 1000, "
                "1 <= --users <= 100000, 1 <= --rounds <= 20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    atexit.register(stop_all)
    # Our own handlers, so that asyncio.run keeps them: Ctrl-C interrupts even a blocking wait for
    # the load client at once (asyncio's own handler would only cancel the main task).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        stop_all()
        print("interrupted; every process started here is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark scripts still run end to end (tiny sizes; figures are not checked, only that each
script gets through every stage and prints them). A script that rots breaks here, not in the
hands of the next engineer who wants its numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_webhook_bench_runs_both_servers_and_prints_the_ratio() -> None:
    out = run_bench("webhook.py", "--mode", "plain", "--seconds", "1", "--warmup", "0.2", "--users", "5",
                    "--concurrency", "5")
    assert "plain  baseline" in out and "plain  distbot" in out
    assert "plain: distbot/baseline = " in out


def test_orders_bench_runs_every_stage() -> None:
    out = run_bench("orders.py", "--db", "sqlite", "--events", "40", "--distributors", "20", "--entries", "200",
                    "--earnings", "10", "--pace", "0", "--naive")
    for stage in ("order events (risk on):", "events per batch", "naive app (one transaction per event):",
                  "distbot/naive:", "ledger has", "收益 replies:", "收益 handler alone"):
        assert stage in out, out


def test_orders_bench_compares_the_risk_rules_on_and_off() -> None:
    out = run_bench("orders.py", "--db", "sqlite", "--events", "40", "--distributors", "20", "--risk", "both",
                    "--rounds", "1")
    assert out.count("order events (risk off):") == out.count("order events (risk on):") == 1, out
    assert "risk rules, median of 1 runs each:" in out and "收益" not in out, out


def test_exports_bench_streams_the_whole_ledger() -> None:
    out = run_bench("exports.py", "--entries", "3000", "--distributors", "200")
    assert "ledger.csv, 3,000 rows" in out and "during it at most" in out, out


def test_posters_bench_renders_and_compares() -> None:
    out = run_bench("posters.py", "--posters", "3", "--threads", "1")
    assert "bare" in out and "cold" in out, out


def test_weekly_bench_reaches_everyone_once() -> None:
    out = run_bench("weekly.py", "--distributors", "60", "--orders", "200", "--batch", "25")
    for stage in ("weekly reports: 60 queued", "second run, same week: 0 queued", "the week after: 60 queued"):
        assert stage in out, out


def test_broadcast_bench_queues_and_sends_everyone() -> None:
    out = run_bench("broadcast.py", "--db", "sqlite", "--recipients", "50", "--rate", "200")
    assert "[baseline]" in out and "50 recipients: queued in" in out, out
    assert "sent 50 (failed 0)" in out, out


def test_contests_bench_times_top_and_settles_once() -> None:
    out = run_bench("contests.py", "--distributors", "60", "--orders", "400", "--top", "20")
    for stage in ("monthly star made", "排行 handler alone", "等级 handler alone", "settlement of a contest with",
                  "a second settle: None"):
        assert stage in out, out


def test_console_bench_signs_in_and_times_every_page() -> None:
    out = run_bench("console.py", "--distributors", "50", "--entries", "300", "--withdrawals", "20", "--calls", "2")
    for stage in ("seeded 50 distributors", "monthly star made", "close to the server's time", "/admin/distributors?q=",
                  "/admin/tickets", "slowest p99:"):
        assert stage in out, out


def test_reads_bench_compares_bare_sessions_and_the_reader() -> None:
    out = run_bench("reads.py", "--events", "40", "--distributors", "20", "--readers", "2")
    for mode in ("none  :", "bare  :", "reader:", "pages :"):
        assert mode in out and "writer lock waits" in out, out


def test_team_bonus_bench_pays_once() -> None:
    out = run_bench("team_bonus.py", "--small")
    assert "team bonus for" in out and "rewards paid" in out and "a second run: 200 rewards in all" in out, out
def test_chat_depth_bench_times_every_command_and_page() -> None:
    out = run_bench("chat_depth.py", "--members", "40", "--entries", "300", "--distributors", "60", "--calls", "2",
                    "--pg-url", "")
    for stage in ("seeded a team of 40", "团队   page      1:", "团队订单 page     15:", "明细   page     30:",
                  "slowest p99:"):
        assert stage in out, out

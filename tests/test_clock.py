"""One clock (domain.clock): the product reads the date and time only through `app[CLOCK]`, so a
test moves time instead of waiting for it. Read from the source with ast (nothing is imported),
like tests/test_layers.py; and the FakeClock's own behaviour."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.clock import Clock, FakeClock

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("app", "kit", "wechat", "sandbox", "handlers", "domain", "content", "storage")
# The clock itself; and migrations, which run once at upgrade, outside any app and its clock.
ALLOWED = ("domain/clock.py", "storage/migrations/")
# datetime.now(), datetime.utcnow(), datetime.today(), date.today(), time.time() (called or passed on).
WALL = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
        ("time", "time"), ("time", "time_ns")}


def _owner(node: ast.expr) -> str | None:
    """`datetime` for datetime.now and datetime.datetime.now, `time` for time.time, and so on."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def wall_clock_reads(source: str) -> list[int]:
    """The lines of a module that read the wall clock."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and (_owner(node.value), node.attr) in WALL:
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "time" and \
                any(a.name in ("time", "time_ns") for a in node.names):
            lines.append(node.lineno)
    return lines


def violations() -> list[str]:
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(ALLOWED):
                continue
            found += [f"{rel}:{line} reads the wall clock: use app[CLOCK] (routes: "
                      "request.config_dict[CLOCK], handlers: ctx.now) or take `now` as an argument"
                      for line in wall_clock_reads(path.read_text(encoding="utf-8"))]
    return found


def test_the_product_reads_time_only_through_the_clock() -> None:
    assert violations() == []


@pytest.mark.parametrize("source", [
    "from datetime import UTC, datetime\nx = datetime.now(UTC)\n",
    "import datetime\nx = datetime.datetime.utcnow()\n",
    "from datetime import date\nx = date.today()\n",
    "import time\nx = int(time.time())\n",
    "import time\nclock = time.time\n",
    "from time import time\n",
])
def test_a_wall_clock_read_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "intruder.py").write_text(source)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert [v.split(" ")[0] for v in violations()] == [f"handlers/intruder.py:{source.count(chr(10))}"]


def test_monotonic_timers_are_not_the_wall_clock() -> None:
    assert wall_clock_reads("import time\nstart = time.monotonic()\nloop.time()\n") == []


# ---- the clocks ------------------------------------------------------------------------------------
def test_the_real_clock_is_aware_utc() -> None:
    now = Clock().now()
    assert now.tzinfo is UTC and abs(Clock().epoch() - now.timestamp()) < 5


def test_a_fake_clock_flows_and_moves() -> None:
    clock = FakeClock()
    start = clock.now()
    assert abs((start - Clock().now()).total_seconds()) < 5  # real time until moved
    moved = clock.move(minutes=31)
    assert timedelta(minutes=31) <= moved - start < timedelta(minutes=32)
    assert abs(clock.epoch() - clock.now().timestamp()) < 1
    clock.move(timedelta(hours=-1))
    assert clock.now() < start
    at = datetime(2026, 3, 31, 15, 0, tzinfo=UTC)
    clock.set(at)
    assert timedelta(0) <= clock.now() - at < timedelta(minutes=1)


def test_a_frozen_fake_clock_stands_still_until_moved() -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    at = clock.freeze()
    assert clock.now() == at and clock.epoch() == at.timestamp()
    assert clock.move(days=8) == at + timedelta(days=8) == clock.now()

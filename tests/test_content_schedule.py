"""Scheduled content: a festival version of a pack is live only inside its window (live_from /
live_until), the `content` job switches it in (announcing it to every active distributor, once)
and the replaced version back; invalid windows are refused at upload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox.platform import SimUser
from kit.app_keys import WRITER
from content.store import switch_windows
from handlers.content_packs import content_job
from tests.conftest import Harness
from tests.test_packs_support import MANIFEST, small_pack, upload, zip_of

ANNOUNCE = "圣诞限定礼盒今天上线，回复“话术”领取新文案！"
FESTIVAL_SCRIPT = "{{ distributor.name }}的圣诞限定推荐：{{ product.name }}"
FESTIVAL_TRAINING = "# 圣诞特训\n\n节日期间怎么推广。\n"


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def manifest(version: str, window: str = "") -> str:
    """The small pack's manifest as `version`, with extra [pack] keys (a window, an announcement)."""
    return MANIFEST.replace('version = "1"\n', f'version = "{version}"\n{window}')


def festival(version: str, window: str) -> bytes:
    """A festival version: its own script text and training title, so chat shows which is live."""
    return zip_of(small_pack(manifest(version, window).replace('title = "新人第一课"', 'title = "圣诞特训"'),
                             **{"scripts/sku1.txt.j2": FESTIVAL_SCRIPT, "trainings/newcomer-1.md": FESTIVAL_TRAINING}))


def window(live_from: datetime | None = None, live_until: datetime | None = None, announce: str | None = None) -> str:
    keys = {"live_from": live_from, "live_until": live_until}
    out = "".join(f'{k} = "{rfc3339(v)}"\n' for k, v in keys.items() if v is not None)
    return out + (f'announce = "{announce}"\n' if announce is not None else "")


async def packs(h: Harness) -> dict[str, dict[str, Any]]:
    status, body = await h.api("GET", "/content-packs")
    assert status == 200
    return {p["version"]: p for p in body["packs"]}


async def shown(h: Harness, user: SimUser) -> tuple[str, str]:
    """(the script 话术 gives, the title of the training 培训 gives): what chat shows as live."""
    script = await h.say(user, "话术")
    reply = await h.send(user, "text", content="培训")
    assert reply is not None and reply["type"] == "news", reply
    return script, reply["articles"][0]["title"]


async def switch(h: Harness, now: datetime) -> list[tuple[str, str | None]]:
    rows = await h.app[WRITER].run(lambda s: switch_windows(s, now), slow=True)
    return [(r.version, r.window_state) for r in rows]


async def campaigns(h: Harness) -> list[dict[str, Any]]:
    status, body = await h.api("GET", "/campaigns")
    assert status == 200
    return body["campaigns"]


async def test_a_festival_waits_goes_live_announced_once_and_hands_back(harness: Harness) -> None:
    h = harness
    user = h.user()
    await h.register(user, "13800138000", "王小明")
    assert (await upload(h, zip_of(small_pack())))[0] == 201
    regular = await shown(h, user)
    assert "王小明推荐：有机红枣礼盒" in regular[0] and regular[1] == "新人第一课"

    # live_from a few seconds ahead: the announcement is sent by the real-time campaign worker.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    end = start + timedelta(days=3)
    status, body = await upload(h, festival("2", window(start, end, ANNOUNCE)))
    assert status == 201, body
    assert body["live"] is False and body["window_state"] == "waiting"
    listed = await packs(h)
    assert listed["2"]["live"] is False and listed["2"]["window_state"] == "waiting"
    assert datetime.fromisoformat(listed["2"]["live_from"]) == start
    assert datetime.fromisoformat(listed["2"]["live_until"]) == end
    assert listed["1"]["live"] is True and listed["1"]["window_state"] is None and listed["1"]["live_from"] is None
    assert await shown(h, user) == regular  # newer, but not yet in its window
    assert await campaigns(h) == []

    assert await switch(h, start - timedelta(seconds=1)) == []  # not yet: nothing moves
    assert await switch(h, start) == [("2", "live")]
    assert await switch(h, start + timedelta(seconds=30)) == []  # a second run does nothing more
    listed = await packs(h)
    assert (listed["2"]["live"], listed["2"]["window_state"], listed["1"]["live"]) == (True, "live", False)
    script, training = await shown(h, user)
    assert "王小明的圣诞限定推荐：有机红枣礼盒" in script and training == "圣诞特训"

    [announcement] = await campaigns(h)
    assert announcement["text"] == ANNOUNCE and announcement["kind"] == "training" and "winter-2026" in announcement["title"]
    item = await h.platform.wait_for(user.openid, lambda i: i.get("via") == "custom" and i.get("content") == ANNOUNCE,
                                     timeout=20)
    assert item["from"] == "bot"
    # The job itself (real clock, now past live_from): nothing left to do, still one announcement.
    assert await content_job.run(h.app) == 0
    assert len(await campaigns(h)) == 1
    await h.settled()
    assert sum(1 for i in h.platform.users[user.openid].timeline if i.get("content") == ANNOUNCE) == 1

    # After live_until the replaced version is live again, once.
    assert await switch(h, end) == [("2", "ended")]
    assert await switch(h, end + timedelta(minutes=1)) == []
    listed = await packs(h)
    assert (listed["1"]["live"], listed["2"]["live"], listed["2"]["window_state"]) == (True, False, "ended")
    assert await shown(h, user) == regular
    assert len(await campaigns(h)) == 1


async def test_windows_at_import_and_a_newer_plain_version_during_a_festival(harness: Harness) -> None:
    h = harness
    now = datetime.now(UTC)
    assert (await upload(h, zip_of(small_pack())))[0] == 201
    # A window already open goes live at once, remembering what it replaced; one already over does not.
    status, body = await upload(h, festival("2", window(now - timedelta(hours=1), now + timedelta(hours=1))))
    assert status == 201 and (body["live"], body["window_state"]) == (True, "live")
    status, body = await upload(h, festival("3", window(now - timedelta(days=2), now - timedelta(days=1))))
    assert status == 201 and (body["live"], body["window_state"]) == (False, "ended")
    listed = await packs(h)
    assert [v for v, p in listed.items() if p["live"]] == ["2"]

    # A newer version without a window takes over at once; the festival's end then leaves it live.
    status, body = await upload(h, zip_of(small_pack(manifest("4"))))
    assert status == 201 and body["live"] is True and body["window_state"] is None
    assert await switch(h, now + timedelta(hours=2)) == [("2", "ended")]
    listed = await packs(h)
    assert [v for v, p in listed.items() if p["live"]] == ["4"] and listed["3"]["window_state"] == "ended"
    assert await campaigns(h) == []  # no announce key, no campaign


async def test_a_festival_without_a_version_to_return_to_leaves_its_name_empty(harness: Harness) -> None:
    h = harness
    user = h.user()
    await h.register(user, "13900139000", "周芷若")
    start = datetime.now(UTC) + timedelta(days=1)
    status, body = await upload(h, festival("1", window(start, start + timedelta(days=1))))
    assert status == 201 and body["window_state"] == "waiting"
    assert "还没有推广话术" in await h.say(user, "话术")
    # The job missed the whole window (the server was down): it never goes live, nothing is announced.
    status, body = await upload(h, zip_of(small_pack(manifest("0", window(start, start + timedelta(hours=1))))))
    assert status == 201
    assert sorted(await switch(h, start + timedelta(hours=2))) == [("0", "ended"), ("1", "live")]
    assert "圣诞限定推荐" in await h.say(user, "话术")
    assert await switch(h, start + timedelta(days=2)) == [("1", "ended")]
    listed = await packs(h)
    assert not any(p["live"] for p in listed.values()) and listed["0"]["window_state"] == "ended"
    assert "还没有推广话术" in await h.say(user, "话术")


async def test_a_plain_pack_with_an_announcement_announces_as_it_goes_live(harness: Harness) -> None:
    h = harness
    status, body = await upload(h, zip_of(small_pack(manifest("1", 'announce = "冬季新品上线"\n'))))
    assert status == 201 and body["live"] is True and body["window_state"] is None and body["live_until"] is None
    [c] = await campaigns(h)
    assert c["text"] == "冬季新品上线" and c["audience"] == "all"
    # An older version is stored, not live, and says nothing.
    status, body = await upload(h, zip_of(small_pack(manifest("0", 'announce = "旧版"\n'))))
    assert status == 201 and body["live"] is False
    assert len(await campaigns(h)) == 1


BAD_WINDOWS: list[tuple[str, str, str]] = [
    ("local datetime", "live_from = 2026-12-24T00:00:00\n", "没有时区"),
    ("string without zone", 'live_until = "2026-12-24T00:00:00"\n', "没有时区"),
    ("date only", "live_from = 2026-12-24\n", "没有时区"),
    ("not a date", 'live_from = "christmas"\n', "RFC 3339"),
    ("impossible date", 'live_from = "2026-02-30T00:00:00+08:00"\n', "不是真实存在的日期"),
    ("a number", "live_until = 20261224\n", "RFC 3339"),
    ("no UTC time", 'live_from = "0001-01-01T00:00:00+08:00"\n', "不是真实存在的日期"),
    ("no UTC time, TOML", "live_until = 9999-12-31T23:00:00-02:00\n", "不是真实存在的日期"),
    ("until before from", 'live_from = 2026-12-24T00:00:00+08:00\nlive_until = "2026-12-23T23:00:00+08:00"\n',
     "须晚于 live_from"),
    ("empty announce", 'announce = " "\n', "不能为空"),
    ("long announce", f'announce = "{"好" * 601}"\n', "最多 600 个字"),
]


@pytest.mark.parametrize("case", BAD_WINDOWS, ids=[c[0] for c in BAD_WINDOWS])
async def test_invalid_windows_are_refused_naming_the_field(harness: Harness, case: tuple[str, str, str]) -> None:
    _, keys, words = case
    status, body = await upload(harness, zip_of(small_pack(manifest("1", keys))))
    assert status == 422, body
    field = keys.split(" ")[0] if "live_from" not in words else "live_until"
    assert any(d["file"] == "manifest.toml" and d["field"] == f"pack.{field}" and words in d["message"]
               for d in body["details"]), body["details"]
    assert await packs(harness) == {}


def test_offset_datetimes_and_strings_are_both_accepted(tmp_path: Path) -> None:
    from content.packs import validate_pack

    path = tmp_path / "p.zip"
    path.write_bytes(zip_of(small_pack(manifest("1", 'live_from = 2026-12-24T00:00:00+08:00\n'
                                                     'live_until = "2026-12-26T16:00:00Z"\nannounce = " 上新 "\n'))))
    pack = validate_pack(path, ["junior"])
    assert pack.live_from == datetime(2026, 12, 23, 16, tzinfo=UTC)
    assert pack.live_until == datetime(2026, 12, 26, 16, tzinfo=UTC) and pack.announce == "上新"


def test_cli_import_says_when_a_festival_goes_live(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/cli.db"\n')
    waiting, bad = tmp_path / "waiting.zip", tmp_path / "bad.zip"
    waiting.write_bytes(festival("2", window(datetime(2099, 12, 24, tzinfo=UTC))))
    bad.write_bytes(zip_of(small_pack(manifest("3", "live_from = 2099-12-24T00:00:00\n"))))
    assert main(["content", "import", str(waiting), "--config", str(config)]) == 0
    assert "it goes live at 2099-12-24T08:00:00+08:00" in capsys.readouterr().out
    assert main(["content", "import", str(bad), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "pack.live_from" in err and "没有时区" in err and "Traceback" not in err

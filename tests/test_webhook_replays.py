"""In plain mode a signed query is good for one body (CONTRACT §7): WeChat's signature covers the
token, timestamp and nonce but not the body, so the same query with another body is refused and
nothing of it is processed; with the same body it is a retry, answered like the first."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import String, func, literal, update

from wechat.replays import key_prefix
from kit.app_keys import SESSIONMAKER
from storage import db as storage_db
from storage.tables import PROCESSED, SIGNED_QUERIES
from tests.conftest import Harness
from tests.test_jobs import until_runs
from tests.webhook_support import plain_query, push, safe_harness, stored, text_fields, to_xml  # noqa: F401


def fresh_query() -> dict[str, str]:
    return plain_query(nonce=secrets.token_hex(8))


async def test_same_query_with_another_body_is_403_and_nothing_processed(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    query = fresh_query()
    status, reply = await push(harness, to_xml(text_fields(openid="oAlice", content="帮助", msg_id="1")), query=query)
    assert status == 200 and "分销员助手" in reply["Content"]
    before = await stored(harness)
    with caplog.at_level(logging.WARNING, logger="wechat.inbound"):
        status, _ = await push(harness, to_xml(text_fields(openid="oMallory", content="注册", msg_id="2")), query=query)
    assert status == 403
    assert await stored(harness) == before  # no follower, no conversation, no dedupe key, nothing sent
    assert any("another body" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    # Another query (a fresh nonce) with that body is WeChat's own delivery and goes through.
    status, reply = await push(harness, to_xml(text_fields(openid="oMallory", content="注册", msg_id="2")))
    assert status == 200 and "手机号" in reply["Content"]


async def test_same_query_with_the_same_body_is_a_retry_answered_like_the_first(harness: Harness) -> None:
    query, body = fresh_query(), to_xml(text_fields(openid="oAlice", content="注册", msg_id="3"))
    first = await push(harness, body, query=query)
    again = await push(harness, body, query=query)
    assert first[0] == 200 and "手机号" in first[1]["Content"]
    assert again == first
    counts = await stored(harness)
    assert counts["processed_messages"] == 1 and counts["signed_queries"] == 1


async def test_one_query_with_two_bodies_at_once_processes_one(harness: Harness) -> None:
    query = fresh_query()
    bodies = [to_xml(text_fields(openid=f"oRacer{i}", content="注册", msg_id=str(10 + i))) for i in range(2)]
    results = await asyncio.gather(*(push(harness, body, query=query) for body in bodies))
    assert sorted(status for status, _ in results) == [200, 403]
    counts = await stored(harness)
    assert counts["processed_messages"] == 1 and counts["followers"] == 1 and counts["conversation_states"] == 1


async def test_a_second_delivery_of_an_update_in_work_binds_its_own_query(harness: Harness) -> None:
    # WeChat's retry (same body, its own query) may arrive while the first is still in work: it
    # waits for the same reply, and its query too is good for that body only.
    body = to_xml(text_fields(openid="oAlice", content="注册", msg_id="20"))
    first_query, second_query = fresh_query(), fresh_query()
    results = await asyncio.gather(push(harness, body, query=first_query), push(harness, body, query=second_query))
    assert results[0][0] == 200 and results[1] == results[0]
    other = to_xml(text_fields(openid="oMallory", content="注册", msg_id="21"))
    assert (await push(harness, other, query=second_query))[0] == 403
    assert (await stored(harness))["followers"] == 1


async def test_safe_mode_remembers_no_query(safe_harness: Harness) -> None:
    # msg_signature already covers the encrypted body: another body needs another signature.
    status, reply = await push(safe_harness, to_xml(text_fields(openid="oAlice", content="帮助")), safe=True)
    assert status == 200 and "分销员助手" in reply["Content"]
    counts = await stored(safe_harness)
    assert counts["processed_messages"] == 1 and counts["signed_queries"] == 0


async def test_old_keys_and_queries_are_pruned_a_chunk_at_a_time(harness: Harness,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_db, "PRUNE_CHUNK", 2)  # several units for the old rows
    for i in range(3):
        assert (await push(harness, to_xml(text_fields(openid="oAlice", content="帮助", msg_id=str(30 + i)))))[0] == 200
    async with harness.app[SESSIONMAKER]() as session, session.begin():
        await session.execute(update(PROCESSED).values(created_at=datetime.now(UTC) - timedelta(days=3)))
        # The signed queries so far an hour old: their keys start with their timestamp.
        old = key_prefix(int(time.time()) - 3600)
        await session.execute(update(SIGNED_QUERIES).values(key=literal(old, String).concat(func.substr(SIGNED_QUERIES.c.key, 11))))
    assert (await push(harness, to_xml(text_fields(openid="oAlice", content="帮助", msg_id="40"))))[0] == 200
    status, body = await harness.api("POST", "/jobs/prune-processed-messages/run")
    assert (status, body["status"]) == (202, "started")
    await until_runs(harness, "prune-processed-messages", 1)
    counts = await stored(harness)
    assert counts["processed_messages"] == 1 and counts["signed_queries"] == 1  # the recent delivery's

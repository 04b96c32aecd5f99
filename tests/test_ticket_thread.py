"""A ticket's page (issue 23 item 8, 客服) in Chromium, SQLite: the asker's questions and the staff's
replies in order with times and who answered (the asker's earlier ticket too, linked), the
asker's words escaped, and a reply sent from the page landing back on it, in the thread."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from kit.app_keys import WRITER
from domain import tickets
from tests.console_support import no_sideways_scroll, sign_in
from tests.test_console_engage import open_tickets, seed_people, ticket_state


@pytest.mark.parametrize("page", ["desktop"], indirect=True)
async def test_a_tickets_whole_thread_and_a_reply_from_it(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed_people(app, "张三")
    first, second = await open_tickets(app, ("ENG001", "怎么提现？", timedelta(hours=3)),
                                       ("ENG001", "<script>alert(1)</script>还是没到账", timedelta(minutes=20)))
    answered = datetime.now(UTC) - timedelta(hours=2)
    await app[WRITER].run(lambda s: tickets.answer(s, first, "在菜单“我的”里点“提现”。", "财务小王", answered))
    await sign_in(page, base)
    await page.get_by_role("link", name="客服", exact=True).click()
    await page.get_by_role("link", name=f"工单 #{second}").click()
    await expect(page.get_by_role("heading", name=f"工单 #{second}")).to_be_visible()
    thread = page.get_by_role("list", name="对话").get_by_role("listitem")
    await expect(thread).to_have_count(3)
    await expect(thread.nth(0)).to_contain_text("提问人")
    await expect(thread.nth(0)).to_contain_text("怎么提现？")
    await expect(thread.nth(0).get_by_role("link", name=f"工单 #{first}")).to_be_visible()
    await expect(thread.nth(1)).to_contain_text("客服 财务小王")
    await expect(thread.nth(1)).to_contain_text("在菜单“我的”里点“提现”。")
    await expect(thread.nth(2)).to_contain_text("<script>alert(1)</script>还是没到账")  # shown as text
    await expect(thread.nth(2)).to_contain_text("本工单")
    await no_sideways_scroll(page)

    await page.get_by_label("回复").fill("已为您查询，今天到账。")
    await page.get_by_role("button", name="发送").click()
    await expect(page.get_by_role("status")).to_contain_text(f"已回复工单 #{second}")
    await expect(page.get_by_role("heading", name=f"工单 #{second}")).to_be_visible()  # back on its page
    await expect(thread).to_have_count(4)
    await expect(thread.nth(3)).to_contain_text("已为您查询，今天到账。")
    await expect(thread.nth(3)).to_contain_text("客服 console:")
    status, actors, queued = (await ticket_state(app))[second]
    assert status == "answered" and len(actors) == 1 and len(queued) == 1
    await page.goto(base + "/admin/tickets/987654")
    await expect(page.get_by_role("alert")).to_contain_text("没有工单 #987654")

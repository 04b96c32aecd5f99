"""Details: 明细 — the distributor's ledger entries, newest first, ten to a page (`明细 2`): the
kind in Chinese, the signed amount (+¥12.50 / -¥3.00), the order or withdrawal it belongs to and
when it was posted (China time). 收益 points here."""

from __future__ import annotations

from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from domain.formats import CHINA, signed_yuan
from domain.ledger import KIND_NAMES
from domain.messages import Text
from domain.team_pages import ChatList, Entry, entry_count, entry_page, page_reply
from storage.models import Distributor

feature = Feature("details")


def entry_line(e: Entry) -> str:
    about = f" 订单 {e.order_no}" if e.order_no else f" 提现单 {e.withdrawal_id}" if e.withdrawal_id else ""
    kind = KIND_NAMES.get(e.kind, e.kind)
    return f"{e.created_at.astimezone(CHINA):%Y-%m-%d %H:%M} {kind} {signed_yuan(e.amount_fen)}{about}"


DETAILS = ChatList("明细", "收支明细", "还没有收支记录。推广的订单付款后，佣金会记在这里。", "收支明细（最新的在前）：")


@feature.command("明细", "details")
@active_only
def on_details(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    return Text(page_reply(DETAILS, ctx.args, lambda number: entry_page(ctx.session, me.id, number),
                           lambda: entry_count(ctx.session, me.id), lambda _, e: entry_line(e)))

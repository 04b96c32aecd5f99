"""Withdrawals: 提现 <amount> in chat (yuan, at most two decimals), and the admin's decisions
(GET /api/withdrawals, GET /api/withdrawals/{id}, POST /api/withdrawals/{id}/approve|reject, and
POST /api/withdrawals/approve for a batch, each one decided as if alone), and the console's 提现:
the queue with each distributor's open risk flags, 批准/拒绝 per row and 批量批准 of the rows
ticked, and the history with each approval's claim state. The distributor hears of each decision
through the outbox. With pay.mode other than "off" an approval sends the claim link of the WeChat Pay transfer instead (domain.payouts; handlers/payouts.py pays).

The rules (the limits of a request, a decision and its notice) live in domain.withdrawal_rules, the
same for chat, API and console; what they refuse is a domain.refusals.Refusal, answered by each
surface's one translation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from datetime import date, datetime, timedelta
from urllib.parse import urlencode
from typing import Annotated, Any, ClassVar, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from sqlalchemy.orm import Session

from kit.api import ApiModel, IdParam, ok, text
from kit.auditing import note
from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from kit.menu import MenuKey
from kit.console import done, may_open, page, page_number
from kit.csv_stream import stream_csv
from kit.app_keys import CLOCK, READER, WRITER
from kit.live_settings import live_config
from domain.export_rows import SOURCE_NAMES, STATUS_NAMES, WITHDRAWALS_HEADER, withdrawal_rows
from domain.formats import CHINA, china_time, parse_yuan, yuan
from domain.ledger import balance
from domain.payouts import STATE_NAMES, claim_words, reason_words, transfers
from domain.risk import RULE_NAMES, open_flags_of
from domain.messages import Text
from domain.records import code_of, on_days, read_days
from domain.refusals import Refusal
from domain.withdrawal_rules import (CONFIRM_ABOVE_FEN, MAX_BATCH, Approval, approve_each, check_request,
                                     decide_and_tell, request_withdrawal, withdrawal_select)
from storage.models import Distributor
from storage.models_ledger import WithdrawalStatus
from storage.tables import BALANCES, WITHDRAWALS

MAX_REASON = 200


# ---- 提现 in chat ------------------------------------------------------------------------------
class Withdrawing(StrEnum):
    CONFIRMING = "withdraw.confirm"


feature = Feature("withdrawals", scope="finance", states=Withdrawing)
api = feature.api
ALL_WORDS = frozenset({"全部", "all"})
CONFIRM_TTL = timedelta(minutes=10)


def _how_to(ctx: Ctx, me: Distributor) -> Text:
    """The balance and how to ask for it (提现 alone, and the menu's 提现)."""
    money = balance(ctx.session, me.id)
    lines = [f"当前可提现 {yuan(money['available_fen'])}。"]
    if money["pending_fen"] > 0:
        lines.append(f"待结算 {yuan(money['pending_fen'])}，订单完成并过了冻结期后可提现。")
    lines.append(f"回复“提现 全部”提取全部可提现余额，或回复“提现 金额”，单位是元，例如：提现 12.50"
                 f"（单笔至少 {yuan(ctx.config.distribution.min_withdraw_fen)}）。")
    return Text("\n".join(lines))


@feature.command("提现", "withdraw", menu=MenuKey.WITHDRAW)
@active_only
def on_withdraw(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    if not ctx.args:
        return _how_to(ctx, me)
    if ctx.args.lower() in ALL_WORDS:
        amount = balance(ctx.session, me.id)["available_fen"]
        if amount <= 0:
            return Text("当前没有可提现的余额。待结算的佣金在订单完成并过了冻结期后才能提现，回复“收益”查看。")
    else:
        amount = parse_yuan(ctx.args)  # a refusal (AmountError, a limit, the balance) is the reply
    if amount > CONFIRM_ABOVE_FEN:  # only what would be accepted is confirmed
        check_request(ctx.session, ctx.config, me.id, amount)
        ctx.set_state(Withdrawing.CONFIRMING, {"amount_fen": amount}, ttl=CONFIRM_TTL)
        return Text(f"确认提现 {yuan(amount)}？回复 1 提交申请，回复其他内容取消。")
    return _requested(ctx, me, amount)


@feature.state(Withdrawing.CONFIRMING, keeps=lambda text: text.strip() == "1")
@active_only
def on_confirm(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    """1 after a large amount's question: the request, its rules checked again now."""
    assert ctx.state is not None
    amount = int(ctx.state.data["amount_fen"])
    ctx.clear_state()
    return _requested(ctx, me, amount)


def _requested(ctx: Ctx, me: Distributor, amount: int) -> Text:
    wid = request_withdrawal(ctx.session, ctx.config, me.id, amount, ctx.now)
    if ctx.config.pay.on:
        return Text(f"提现申请已提交：{yuan(amount)}（申请号 {wid}）。\n审核通过后会发给您领取链接，"
                    "在微信里确认收款即转入零钱。回复“提现记录”查看进度。")
    return Text(f"提现申请已提交：{yuan(amount)}（申请号 {wid}）。\n审核通过后打款，结果会通知您。")


# ---- /api/withdrawals ----------------------------------------------------------------------------
class Transfer(BaseModel):
    out_bill_no: str = Field(description="the merchant's number of the latest WeChat Pay transfer bill")
    state: str = Field(description="CREATING (being created), then WeChat Pay's: ACCEPTED, PROCESSING, "
                                   "WAIT_USER_CONFIRM, TRANSFERING, SUCCESS, FAIL, CANCELING, CANCELLED")
    fail_reason: str | None = Field(description="WeChat Pay's fail_reason, e.g. NAME_NOT_CORRECT, OVERDUE_CLOSE")


class Withdrawal(BaseModel):
    id: int
    distributor_code: str
    amount_fen: int
    status: WithdrawalStatus
    source: Literal["chat", "exit"]
    reason: str | None
    requested_at: datetime
    decided_at: datetime | None
    transfer: Transfer | None = Field(None, description="present once a WeChat Pay transfer bill exists (pay.mode on)")


class Withdrawals(BaseModel):
    withdrawals: list[Withdrawal]


class WithdrawalQuery(ApiModel):
    status: WithdrawalStatus | None = Field(None, description="only withdrawals of this status (omitted: all)")


class Rejection(ApiModel):
    noun: ClassVar[str] = "rejection"
    reason: text(MAX_REASON) = Field(description="told to the distributor")


def _withdrawal_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "distributor_code": row.code, "amount_fen": row.amount_fen, "status": row.status,
            "source": row.source, "reason": row.reason, "requested_at": china_time(row.requested_at),
            "decided_at": china_time(row.decided_at) if row.decided_at else None}


def _with_transfer(session: Session, row: Any) -> dict[str, Any]:
    data = _withdrawal_json(row)
    bill = transfers(session, [row.id]).get(row.id)
    if bill is not None:
        data["transfer"] = {k: bill[k] for k in ("out_bill_no", "state", "fail_reason")}
    return data


@api.get("/withdrawals", summary="Withdrawal requests, oldest first, optionally of one status",
         query=WithdrawalQuery, response=Withdrawals)
async def list_withdrawals(request: web.Request, query: WithdrawalQuery) -> web.Response:
    stmt = withdrawal_select().order_by(WITHDRAWALS.c.id)
    if query.status is not None:
        stmt = stmt.where(WITHDRAWALS.c.status == query.status)
    # Every withdrawal of the status: no bound, so off the loop.
    rows = await request.config_dict[READER].run(lambda session: session.execute(stmt).all(), slow=True)
    return ok({"withdrawals": [_withdrawal_json(r) for r in rows]})


class WithdrawalId(IdParam):
    noun: ClassVar[str] = "withdrawal"


@api.get("/withdrawals/{id}", summary="One withdrawal, with its WeChat Pay transfer once a bill exists",
         params=WithdrawalId, response=Withdrawal, errors=(404,))
async def get_withdrawal(request: web.Request, params: WithdrawalId) -> web.Response:
    def read(session: Session) -> dict[str, Any] | None:
        row = session.execute(withdrawal_select().where(WITHDRAWALS.c.id == params.id)).first()
        return _with_transfer(session, row) if row is not None else None
    found = await request.config_dict[READER].run(read)
    if found is None:
        raise Refusal("not_found", f"No withdrawal {params.id}.")
    return ok(found)


async def _decide(request: web.Request, wid: int, approve: bool, reason: str | None = None) -> web.Response:
    config = live_config(request.config_dict)
    row = await request.config_dict[WRITER].run(
        lambda s: decide_and_tell(s, config, wid, approve, request.config_dict[CLOCK].now(), reason))
    return ok(_withdrawal_json(row))


@api.post("/withdrawals/{id}/approve",
          summary="Approve a pending withdrawal (paid out; with pay on, the distributor gets the claim link); "
                  "409 if decided, or while the distributor is suspended or has an open risk flag",
          params=WithdrawalId, response=Withdrawal, errors=(404, 409))
async def approve_withdrawal(request: web.Request, params: WithdrawalId) -> web.Response:
    return await _decide(request, params.id, approve=True)


@api.post("/withdrawals/{id}/reject",
          summary="Reject a pending withdrawal with a reason; the money returns to available; 409 if decided",
          params=WithdrawalId, body=Rejection, response=Withdrawal, errors=(404, 409))
async def reject_withdrawal(request: web.Request, params: WithdrawalId, body: Rejection) -> web.Response:
    return await _decide(request, params.id, approve=False, reason=body.reason)


class BatchApproval(ApiModel):
    noun: ClassVar[str] = "batch_approval"
    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"withdrawal ids, 1 to {MAX_BATCH}; each decided on its own")


class Approved(BaseModel):
    id: int
    status: WithdrawalStatus


class NotApproved(BaseModel):
    id: int
    error: str = Field(description="the refusal's code, as the single approve answers it (not_found, "
                                   "already_decided, distributor_suspended, risk_flag_open)")
    message: str


class BatchResults(BaseModel):
    results: list[Approved | NotApproved]


def _summary(outcomes: list[Approval]) -> str:
    """The batch in words: the audit row's summary, the console's flash."""
    approved = [o for o in outcomes if o.refusal is None]
    refused = [o for o in outcomes if o.refusal is not None]
    words = f"批量批准：已批准 {len(approved)} 笔"
    if approved:
        words += f"（{'、'.join(str(o.id) for o in approved)}）"
    if refused:
        words += f"；未批准 {len(refused)} 笔：" + " ".join(o.refusal.sentence for o in refused if o.refusal)
    return words


async def _approve_batch(request: web.Request, ids: list[int]) -> list[Approval]:
    config, now = live_config(request.config_dict), request.config_dict[CLOCK].now()
    outcomes = await request.config_dict[WRITER].run(lambda s: approve_each(s, config, ids, now))
    note(request, _summary(outcomes))
    return outcomes


@api.post("/withdrawals/approve",
          summary=f"Approve up to {MAX_BATCH} pending withdrawals, each decided (or refused) on its own exactly as "
                  "the single approve decides it; one result per id, in the order given",
          body=BatchApproval, response=BatchResults)
async def approve_withdrawals(request: web.Request, body: BatchApproval) -> web.Response:
    outcomes = await _approve_batch(request, body.ids)
    return ok({"results": [{"id": o.id, "status": o.status} if o.refusal is None else
                           {"id": o.id, "error": o.refusal.code, "message": o.refusal.message} for o in outcomes]})


# ---- the console's 提现 queue, history and export -------------------------------------------------
HISTORY_PAGE = 50
QUEUE_PAGE = 20


@dataclass(frozen=True)
class History:
    """The history's filters, from the page's query string: status, a distributor's code, and
    the days (China time) the request was made in."""

    status: str = ""
    code: str = ""
    since: date | None = None
    until: date | None = None

    @classmethod
    def of(cls, query: Mapping[str, str]) -> tuple[History, list[str]]:
        problems: list[str] = []
        since, until = read_days(query, problems)
        status = query.get("status", "")
        return cls(status if status in STATUS_NAMES else "", code_of(query), since, until), problems

    def where(self) -> list[Any]:
        w, d = WITHDRAWALS.c, Distributor.__table__.c
        out: list[Any] = []
        if self.status:
            out.append(w.status == self.status)
        if self.code:
            out.append(d.code == self.code)
        return out + on_days(w.requested_at, self.since, self.until)

    def query(self) -> str:
        return urlencode({k: v for k, v in (("status", self.status), ("code", self.code),
                                            ("since", self.since or ""), ("until", self.until or "")) if v})


def _queue(session: Session, history: History, page_no: int, queue_no: int) -> dict[str, Any]:
    """A page of the pending queue (oldest first, each with the distributor's balance) and one of
    the history (newest first): both read on the (status, id) and primary-key indexes."""
    w, b = WITHDRAWALS.c, BALANCES.c
    waiting = w.status == WithdrawalStatus.PENDING
    total = session.scalar(select(func.count()).select_from(WITHDRAWALS).where(waiting)) or 0
    pages = max((total + QUEUE_PAGE - 1) // QUEUE_PAGE, 1)
    queue_no = min(queue_no, pages)
    pending = session.execute(
        withdrawal_select().add_columns(Distributor.__table__.c.name, w.distributor_id, b.available_fen,
                                        b.withdrawing_fen, b.withdrawn_fen)
        .outerjoin(BALANCES, b.distributor_id == w.distributor_id)
        .where(waiting).order_by(w.id).offset((queue_no - 1) * QUEUE_PAGE).limit(QUEUE_PAGE)).all()
    rows = session.execute(withdrawal_select().add_columns(Distributor.__table__.c.name, w.pay_transfer)
                           .where(*history.where())
                           .order_by(w.id.desc()).offset((page_no - 1) * HISTORY_PAGE).limit(HISTORY_PAGE + 1)).all()
    shown = rows[:HISTORY_PAGE]
    return {"pending": pending, "pending_total": total, "queue_no": queue_no, "queue_pages": pages,
            "flags": open_flags_of(session, [r.distributor_id for r in pending]), "history": shown, "more": len(rows) > HISTORY_PAGE, "transfers": transfers(session, [r.id for r in shown])}


@feature.console.get("/withdrawals")
async def queue_page(request: web.Request) -> web.Response:
    history, problems = History.of(request.query)
    page_no, queue_no = page_number(request), page_number(request, "queue")
    values = await request.config_dict[READER].run(lambda s: _queue(s, history, page_no, queue_no))
    return page(request, "withdrawals.html", title="提现", current="/withdrawals", filters=history,
                problems=problems, page_no=page_no, status_names=STATUS_NAMES, source_names=SOURCE_NAMES,
                state_names=STATE_NAMES, reason_words=reason_words, claim_words=claim_words, rule_names=RULE_NAMES,
                audit=may_open(request, "/audit"), risk=may_open(request, "/risk"), **values)


@feature.console.get("/withdrawals.csv")
async def export_csv(request: web.Request) -> web.StreamResponse:
    """The history as the filters choose it, oldest first, streamed a page at a time."""
    history, _ = History.of(request.query)
    reader = request.config_dict[READER]

    async def pages(after: int) -> tuple[int, list[tuple[Any, ...]]]:
        return await reader.run(lambda s: withdrawal_rows(s, history.where(), after), slow=True)
    today = request.config_dict[CLOCK].now().astimezone(CHINA)
    return await stream_csv(request, f"提现记录-{today:%Y%m%d}.csv", WITHDRAWALS_HEADER, pages)


@feature.console.post(r"/withdrawals/{id:\d{1,18}}")
async def decide_page(request: web.Request) -> web.StreamResponse:
    wid = int(request.match_info["id"])
    form = await request.post()
    decision, reason = form.get("decision"), " ".join(str(form.get("reason", "")).split())[:MAX_REASON]
    if decision not in ("approve", "reject"):
        return done(request, "/withdrawals", "请选择批准或拒绝。", error=True)
    if decision == "reject" and not reason:
        return done(request, "/withdrawals", f"拒绝申请 {wid} 需要填写原因（会告知分销员）。", error=True)
    approve = decision == "approve"
    config = live_config(request.config_dict)
    await request.config_dict[WRITER].run(
        lambda s: decide_and_tell(s, config, wid, approve, request.config_dict[CLOCK].now(), None if approve else reason))
    return done(request, "/withdrawals", f"申请 {wid} 已{'批准' if approve else '拒绝'}。")


@feature.console.post("/withdrawals/approve")
async def batch_page(request: web.Request) -> web.StreamResponse:
    """批量批准: the ticked rows, each approved or refused on its own, as the API's batch."""
    picked = [v for v in (await request.post()).getall("ids", []) if isinstance(v, str)]
    ids = [int(v) for v in picked if v.isascii() and v.isdigit() and 0 < len(v) <= 18 and int(v) > 0]
    if not ids:
        return done(request, "/withdrawals", "请先勾选要批准的提现申请。", error=True)
    if len(ids) > MAX_BATCH:
        return done(request, "/withdrawals", f"一次最多批准 {MAX_BATCH} 笔，请少选一些。", error=True)
    outcomes = await _approve_batch(request, ids)
    return done(request, "/withdrawals", _summary(outcomes), error=all(o.refusal is not None for o in outcomes))

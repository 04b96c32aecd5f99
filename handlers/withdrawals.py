"""Withdrawals: 提现 <amount> in chat (yuan, at most two decimals), and the admin's decisions
(GET /api/withdrawals, GET /api/withdrawals/{id}, POST /api/withdrawals/{id}/approve|reject). The
distributor hears of each decision through the outbox. With pay.mode other than "off" an approval
sends the claim link of the WeChat Pay transfer instead (domain.payouts; handlers/payouts.py pays).

A request is one conditional update of the balance row (available ≥ amount), so concurrent
requests can never overdraw, however many arrive at once and on however many processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode
from typing import Any, ClassVar, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from sqlalchemy.orm import Session

from bot.api import ApiError, ApiModel, IdParam, ok, text
from bot.chat import Ctx, Incoming, active_only
from bot.feature import Feature
from bot.console import done, may_open, page, page_number
from bot.exports import stream_csv
from bot.typedefs import CONFIG, READER, WRITER
from domain.config import Config
from domain.config_sections import MIN_TRANSFER_FEN
from domain.exports import SOURCE_NAMES, STATUS_NAMES, WITHDRAWALS_HEADER, withdrawal_rows
from domain.formats import CHINA, AmountError, china_time, parse_yuan, yuan
from domain.ledger import AlreadyDecided, balance, decide_withdrawal, withdraw
from domain.payouts import STATE_NAMES, queue_claim_link, reason_words, transfers
from domain.messages import Text
from domain.outbox import enqueue
from domain.webhooks import withdrawal_paid
from domain.suspension import Refused, check_payable
from storage.models import Distributor
from storage.models_ledger import WithdrawalStatus
from storage.tables import BALANCES, WITHDRAWALS

feature = Feature("withdrawals", scope="finance")
api = feature.api

MAX_REASON = 200


# ---- 提现 in chat ------------------------------------------------------------------------------
@feature.command("提现", "withdraw")
@active_only
def on_withdraw(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    minimum = ctx.config.distribution.min_withdraw_fen
    if not ctx.args:
        available = balance(ctx.session, me.id)['available_fen']
        return Text(f"当前可提现 {yuan(available)}。\n请回复“提现 金额”，单位是元，例如：提现 12.50"
                    f"（单笔至少 {yuan(minimum)}）。")
    try:
        amount = parse_yuan(ctx.args)
    except AmountError as e:
        return Text(str(e))
    if amount < minimum:
        return Text(f"单笔提现至少 {yuan(minimum)}，您申请的是 {yuan(amount)}。")
    pay = ctx.config.pay
    if pay.on and amount < MIN_TRANSFER_FEN:
        return Text(f"微信零钱单笔到账至少 {yuan(MIN_TRANSFER_FEN)}，您申请的是 {yuan(amount)}。")
    if pay.on and amount > pay.max_transfer_fen:
        return Text(f"单笔提现最多 {yuan(pay.max_transfer_fen)}（微信转账的单笔上限），您申请的是 {yuan(amount)}。"
                    "请分成几笔申请。")
    wid = withdraw(ctx.session, me.id, amount, ctx.now)
    if wid is None:
        available = balance(ctx.session, me.id)["available_fen"]
        return Text(f"可提现余额不足：您申请 {yuan(amount)}，当前可提现 {yuan(available)}。"
                    "待结算的佣金在订单完成并过了冻结期后才能提现。")
    if pay.on:
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


def _select():  # noqa: ANN202
    w, d = WITHDRAWALS.c, Distributor.__table__.c
    return select(w.id, d.code, w.amount_fen, w.status, w.source, w.reason, w.requested_at, w.decided_at).join(
        Distributor.__table__, d.id == w.distributor_id)


@api.get("/withdrawals", summary="Withdrawal requests, oldest first, optionally of one status",
         query=WithdrawalQuery, response=Withdrawals)
async def list_withdrawals(request: web.Request, query: WithdrawalQuery) -> web.Response:
    stmt = _select().order_by(WITHDRAWALS.c.id)
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
        row = session.execute(_select().where(WITHDRAWALS.c.id == params.id)).first()
        return _with_transfer(session, row) if row is not None else None
    found = await request.config_dict[READER].run(read)
    if found is None:
        raise ApiError(404, "not_found", f"No withdrawal {params.id}.")
    return ok(found)


def decide_and_tell(session: Session, config: Config, wid: int, approve: bool, now: datetime,
                    reason: str | None = None) -> Any:
    """Decide a pending withdrawal and queue the distributor's notice; the withdrawal's row.
    LookupError when there is none; AlreadyDecided when it was decided before; an approval
    domain.suspension.Refused while the distributor is suspended or has an open risk flag. With pay on, an
    approval leaves the money withdrawing and the notice carries the claim link."""
    if approve:
        check_payable(session, wid)  # suspended, or an open risk flag: Refused (409)
    decided = decide_withdrawal(session, wid, approve, now, reason, paid_out=not config.pay.on)
    if decided is None:
        raise LookupError(wid)
    row = session.execute(_select().where(WITHDRAWALS.c.id == wid)).one()
    openid = session.scalar(select(Distributor.openid).where(Distributor.id == decided["distributor_id"]))
    if approve and config.pay.on:
        queue_claim_link(session, config, withdrawal_id=wid, distributor_id=decided["distributor_id"], openid=openid,
                         amount_fen=row.amount_fen, key=f"withdrawal:{wid}:decided")
        return row
    if approve:
        withdrawal_paid(session, config, withdrawal_id=wid, distributor_id=decided["distributor_id"],
                        distributor_code=row.code, amount_fen=row.amount_fen, now=now)
    amount = yuan(row.amount_fen)
    text = (f"您的提现申请（申请号 {wid}）{amount} 已审核通过，款项将尽快到账。" if approve else
            f"您的提现申请（申请号 {wid}）{amount} 未通过审核，原因：{reason}\n这笔钱已退回您的可提现余额。")
    enqueue(session, f"withdrawal:{wid}:decided", openid, Text(text))
    return row


async def _decide(request: web.Request, wid: int, approve: bool, reason: str | None = None) -> web.Response:
    config = request.config_dict[CONFIG]
    try:
        row = await request.config_dict[WRITER].run(
            lambda s: decide_and_tell(s, config, wid, approve, datetime.now(UTC), reason))
    except LookupError:
        raise ApiError(404, "not_found", f"No withdrawal {wid}.") from None
    except AlreadyDecided as e:
        raise ApiError(409, "already_decided", f"Withdrawal {wid} was already {e.status}.",
                       {"status": e.status}) from None
    except Refused as e:
        raise ApiError(409, e.code, e.message, e.details) from None
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
        problems, days = [], {}
        for name in ("since", "until"):
            raw = query.get(name, "").strip()
            try:
                days[name] = date.fromisoformat(raw) if raw else None
            except ValueError:
                problems.append(f"日期“{raw[:20]}”看不懂，请用 2026-12-01 这样的格式。")
                days[name] = None
        status = query.get("status", "")
        return cls(status if status in STATUS_NAMES else "", query.get("code", "").strip().upper()[:16],
                   days["since"], days["until"]), problems

    def where(self) -> list[Any]:
        w, d = WITHDRAWALS.c, Distributor.__table__.c
        out: list[Any] = []
        if self.status:
            out.append(w.status == self.status)
        if self.code:
            out.append(d.code == self.code)
        if self.since:
            out.append(w.requested_at >= datetime.combine(self.since, time(), CHINA))
        if self.until:
            out.append(w.requested_at < datetime.combine(self.until + timedelta(days=1), time(), CHINA))
        return out

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
        _select().add_columns(Distributor.__table__.c.name, b.available_fen, b.withdrawing_fen, b.withdrawn_fen)
        .outerjoin(BALANCES, b.distributor_id == w.distributor_id)
        .where(waiting).order_by(w.id).offset((queue_no - 1) * QUEUE_PAGE).limit(QUEUE_PAGE)).all()
    rows = session.execute(_select().add_columns(Distributor.__table__.c.name).where(*history.where())
                           .order_by(w.id.desc()).offset((page_no - 1) * HISTORY_PAGE).limit(HISTORY_PAGE + 1)).all()
    shown = rows[:HISTORY_PAGE]
    return {"pending": pending, "pending_total": total, "queue_no": queue_no, "queue_pages": pages,
            "history": shown, "more": len(rows) > HISTORY_PAGE, "transfers": transfers(session, [r.id for r in shown])}


@feature.console.get("/withdrawals")
async def queue_page(request: web.Request) -> web.Response:
    history, problems = History.of(request.query)
    page_no, queue_no = page_number(request), page_number(request, "queue")
    values = await request.config_dict[READER].run(lambda s: _queue(s, history, page_no, queue_no))
    return page(request, "withdrawals.html", title="提现", current="/withdrawals", filters=history,
                problems=problems, page_no=page_no, status_names=STATUS_NAMES, source_names=SOURCE_NAMES,
                state_names=STATE_NAMES, reason_words=reason_words, audit=may_open(request, "/audit"), **values)


@feature.console.get("/withdrawals.csv")
async def export_csv(request: web.Request) -> web.StreamResponse:
    """The history as the filters choose it, oldest first, streamed a page at a time."""
    history, _ = History.of(request.query)
    reader = request.config_dict[READER]

    async def pages(after: int) -> tuple[int, list[tuple[Any, ...]]]:
        return await reader.run(lambda s: withdrawal_rows(s, history.where(), after), slow=True)
    return await stream_csv(request, f"提现记录-{datetime.now(UTC).astimezone(CHINA):%Y%m%d}.csv", WITHDRAWALS_HEADER,
                            pages)


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
    config = request.config_dict[CONFIG]
    try:
        await request.config_dict[WRITER].run(
            lambda s: decide_and_tell(s, config, wid, approve, datetime.now(UTC), None if approve else reason))
    except LookupError:
        return done(request, "/withdrawals", f"没有申请号为 {wid} 的提现。", error=True)
    except AlreadyDecided as e:
        return done(request, "/withdrawals", f"申请 {wid} 已经处理过（{e.status}）。", error=True)
    except Refused as e:
        return done(request, "/withdrawals", f"申请 {wid} 不能批准：{e.words}。", error=True)
    return done(request, "/withdrawals", f"申请 {wid} 已{'批准' if approve else '拒绝'}。")

"""Payouts through WeChat Pay 商家转账 (CONTRACT §4.10): the claim page the approval's link opens
(GET /pay/claim/<token>: it creates the transfer bill and serves the confirm page), WeChat Pay's
callback (POST /pay/notify), the `payouts` job that asks about bills left unfinished, 提现记录 in
chat, and the console's 重试 of a failed transfer. The rules and the money are domain.payouts';
the calls to WeChat Pay are here.

Creating a bill: its row (state CREATING, the out_bill_no derived from the withdrawal and the
attempt) is committed first, then WeChat Pay is asked. A row found CREATING later (a crash, a
timeout) is first queried by that number; only a number WeChat Pay does not know is created, with
the same number and the same fields, so nothing is ever created twice.
"""

from __future__ import annotations

import logging
import os
import signal

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from kit.chat import Ctx, Incoming, active_only
from kit.console import done
from kit.feature import Feature
from kit.headers import content_policy
from kit.app_keys import CLOCK, READER, WRITER
from kit.live_settings import live_config
from wechat.wechat_keys import PAY, WECHAT
from wechat.client import WeChatError
from wechat.pay import Bill, PayClient, PayError, PayRefused, SignatureInvalid
from content.jssdk import wx_config
from content.pay_pages import JS_API_LIST, SCRIPT_SOURCES, claim_page, notice_page
from domain import payouts
from domain.config import Config
from domain.config_sections import TRANSFER_SCENES
from domain.formats import CHINA, yuan
from domain.messages import Text
from storage.models import Distributor
from storage.models_ledger import WithdrawalStatus
from storage.tables import WITHDRAWALS

log = logging.getLogger(__name__)
feature = Feature("payouts", scope="finance")

JOB_BATCH = 200
HISTORY = 10
MAX_NOTIFICATION_BYTES = 64 * 1024
# Test-only faults: "after-create" kills the process (SIGKILL) right after WeChat Pay created a bill
# and before its answer is stored (the next claim must find it, not pay twice); "before-answer"
# right after a callback was applied and before it is answered (WeChat Pay's retry must change nothing).
FAULT_ENV = "DISTBOT_TEST_FAULT"


def _fault(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# ---- talking to WeChat Pay -----------------------------------------------------------------------
async def _store(app: web.Application, bill: Bill) -> payouts.BillRow:
    config = live_config(app)

    def work(session: Session) -> payouts.BillRow:
        payouts.record(session, config, bill.out_bill_no, bill.state, app[CLOCK].now(),
                       transfer_bill_no=bill.transfer_bill_no, fail_reason=bill.fail_reason,
                       package_info=bill.package_info)
        row = payouts.bill_by_number(session, bill.out_bill_no)
        assert row is not None
        return row
    return await app[WRITER].run(work)


async def _create(app: web.Application, claim: payouts.Claim, bill: payouts.BillRow, *,
                  absent: bool) -> payouts.BillRow:
    """Ask WeChat Pay to create the bill under its recorded number (again: the same fields make
    the same bill). PayUnknown and a PayRefused to retry with the same number leave it as it was.
    `absent`: WeChat Pay does not have the bill, so a definite refusal ends the attempt; a bill it
    has (asked again for its package) is never given up on that way."""
    config: Config = live_config(app)
    try:
        answer = await app[PAY].create_bill(
            appid=config.wechat.app_id, out_bill_no=bill.out_bill_no, openid=claim.openid,
            amount_fen=claim.amount_fen, remark=f"佣金提现（申请号 {claim.withdrawal_id}）",
            scene_id=config.pay.transfer_scene_id,
            report_infos=[{"info_type": t, "info_content": c} for t, c in TRANSFER_SCENES[config.pay.transfer_scene_id]],
            notify_url=f"{config.server.public_url}/pay/notify", user_name=claim.name)
    except PayRefused as e:
        if e.retry_same or not absent:
            raise
        log.warning("WeChat Pay refused bill %s: %s", bill.out_bill_no, e)
        # Definite: nothing was created. The attempt ends here; the money goes back (domain.payouts).
        return await _store(app, Bill(bill.out_bill_no, "FAIL", fail_reason=e.code or f"HTTP_{e.status}"))
    _fault("after-create")
    return await _store(app, answer)


async def _usable(app: web.Application, claim: payouts.Claim) -> payouts.BillRow:
    """The claim's bill brought to a state the page can show: its package fetched, or final."""
    bill = claim.bill
    assert bill is not None
    absent = claim.fresh
    if bill.state == payouts.CREATING and not claim.fresh:
        found = await app[PAY].query_bill(bill.out_bill_no)  # an earlier create's outcome is unknown
        absent = found is None
        if found is not None:
            bill = await _store(app, found)
    if bill.state in payouts.FINAL:
        return bill
    if bill.state in (payouts.CREATING, "ACCEPTED") or (bill.state == "WAIT_USER_CONFIRM" and not bill.package_info):
        bill = await _create(app, claim, bill, absent=absent and bill.state == payouts.CREATING)
    return bill


# ---- the claim page ------------------------------------------------------------------------------
def _html(text: str, status: int = 200, policy: str | None = None) -> web.Response:
    """A claim page; `policy`: its Content-Security-Policy when not the pages' (kit.headers)."""
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={**headers, "Content-Security-Policy": policy} if policy else headers)


@feature.pages.get(r"/pay/claim/{token}")
async def claim_link(request: web.Request) -> web.Response:
    app, config = request.app, live_config(request.config_dict)
    ids = payouts.read_claim_token(config, request.match_info["token"]) if config.pay.on else None
    if ids is None:
        return _html(notice_page("链接无效", "这个领取链接无效。请回到公众号，回复“提现记录”查看。"), 404)
    claim = await app[WRITER].run(lambda s: payouts.claim(s, ids[0], ids[1], request.config_dict[CLOCK].now()))
    if claim is None:
        return _html(notice_page("链接无效", "这个领取链接无效。请回到公众号，回复“提现记录”查看。"), 404)
    here = config.server.public_url + request.path_qs
    if claim.suspended:
        return _html(notice_page("暂不能领取", "您的分销员账号已暂停，暂不能领取提现。如有疑问请在公众号回复“客服”。"), 403)
    if claim.status != WithdrawalStatus.APPROVED or claim.bill is None:
        return _html(_status_page(claim))
    try:
        bill = await _usable(app, claim)
    except PayError as e:
        log.warning("claim of withdrawal %s: WeChat Pay did not answer clearly: %s", claim.withdrawal_id, e)
        return _html(notice_page("请稍后再试", "微信支付暂时没有答复，请过一会儿再打开这个链接。", link=here), 503)
    if bill.state in payouts.FINAL:
        if bill.state == "FAIL" and bill.fail_reason == payouts.OVERDUE:
            return _html(notice_page("转账已过期", "这笔转账超过 24 小时没有确认，已关闭。重新打开链接即可再次领取。", link=here))
        return _html(notice_page("已到账" if bill.state == "SUCCESS" else "转账没有成功",
                                 "款项已转入您的微信零钱。" if bill.state == "SUCCESS" else
                                 f"原因：{payouts.reason_words(bill.state, bill.fail_reason)}。这笔钱已退回您的可提现余额。"))
    if bill.state != "WAIT_USER_CONFIRM" or not bill.package_info:
        return _html(notice_page("正在处理", f"转账{payouts.STATE_NAMES.get(bill.state, '处理中')}，请稍后刷新。", link=here))
    try:
        ticket = await request.config_dict[WECHAT].jsapi_ticket()
    except WeChatError as e:
        log.warning("jsapi_ticket: %s", e)
        return _html(notice_page("请稍后再试", "微信暂时没有答复，请过一会儿再打开这个链接。", link=here), 503)
    signed = wx_config(config.wechat.app_id, ticket, int(request.config_dict[CLOCK].epoch()), here, JS_API_LIST)
    pay: PayClient = app[PAY]
    transfer = {"mchId": pay.keys.mchid, "appId": config.wechat.app_id, "package": bill.package_info}
    sandbox = None
    if config.pay.mode == "sandbox":
        sandbox = {"confirm": config.pay_base_url + "confirm", "expire": config.pay_base_url + "expire",
                   "openid": claim.openid, "bill": bill.out_bill_no}
    # The page's own script by its hash, the JS-SDK, and in the sandbox the emulator it posts to.
    policy = content_policy(scripts=SCRIPT_SOURCES, connect=(config.pay_base_url,) if sandbox else ())
    return _html(claim_page(amount=yuan(claim.amount_fen), withdrawal_id=claim.withdrawal_id, wx_config=signed,
                            transfer=transfer, sandbox=sandbox), policy=policy)


def _status_page(claim: payouts.Claim) -> str:
    match claim.status:
        case WithdrawalStatus.PAID:
            return notice_page("已到账", f"申请号 {claim.withdrawal_id} 的提现 {yuan(claim.amount_fen)} 已转入您的微信零钱。")
        case WithdrawalStatus.FAILED:
            reason = payouts.reason_words(claim.bill.state, claim.bill.fail_reason) if claim.bill else "转账失败"
            return notice_page("转账没有成功", f"原因：{reason}。这笔钱已退回您的可提现余额。")
        case _:
            return notice_page("还不能领取", f"申请号 {claim.withdrawal_id} 的提现还没有审核通过，或已被拒绝。")


# ---- WeChat Pay's callback -------------------------------------------------------------------------
@feature.pages.post("/pay/notify")
async def notify(request: web.Request) -> web.Response:
    """MCHTRANSFER.BILL.FINISHED: verified (401 and nothing changes otherwise), applied once, 204."""
    config = live_config(request.config_dict)
    if not config.pay.on:
        raise web.HTTPNotFound()
    body = await request.content.read(MAX_NOTIFICATION_BYTES + 1)
    try:
        if len(body) > MAX_NOTIFICATION_BYTES:
            raise SignatureInvalid("too large")
        bill = request.app[PAY].read_notification(request.headers, body)
    except SignatureInvalid as e:
        log.info("refused a WeChat Pay notification: %s", e)
        return web.json_response({"code": "SIGN_ERROR", "message": "signature verification failed"}, status=401)
    number, state = str(bill["out_bill_no"]), str(bill["state"])
    done_ = await request.app[WRITER].run(lambda s: payouts.record(
        s, config, number, state, request.config_dict[CLOCK].now(), transfer_bill_no=bill.get("transfer_bill_no"),
        fail_reason=bill.get("fail_reason")))
    log.info("WeChat Pay notification: bill %s %s → %s", number, state, done_ or "already applied")
    _fault("before-answer")
    return web.Response(status=204)


# ---- the job ------------------------------------------------------------------------------------
@feature.job("payouts", "interval", minutes=2)
async def reconcile(app: web.Application) -> int:
    """Ask WeChat Pay about every bill not final yet (the callback may never come) and apply what
    it says; a bill it does not know was never created (the next claim creates it). Bills asked
    about are touched, so a long list is gone through in turns. With pay.mode "off" it does nothing."""
    if not live_config(app).pay.on:
        return 0
    now = app[CLOCK].now()
    numbers = await app[READER].run(lambda s: payouts.unfinished(s, now, JOB_BATCH))
    applied = 0
    for number in numbers:
        try:
            found = await app[PAY].query_bill(number)
        except PayError as e:
            log.warning("payouts: query of bill %s: %s", number, e)
            continue
        if found is None:
            await app[WRITER].run(lambda s, n=number: payouts.touch(s, n, app[CLOCK].now()))
            continue
        row = await _store(app, found)
        applied += row.state in payouts.FINAL and found.state in payouts.FINAL
    return applied


# ---- 提现记录 in chat -------------------------------------------------------------------------------
@feature.command("提现记录", "withdrawals")
@active_only
def on_withdrawals(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    w = WITHDRAWALS.c
    rows = ctx.session.execute(select(w.id, w.amount_fen, w.status, w.reason, w.requested_at, w.pay_transfer)
                               .where(w.distributor_id == me.id).order_by(w.id.desc()).limit(HISTORY)).all()
    if not rows:
        return Text("您还没有提现记录。回复“提现 金额”申请提现，例如：提现 12.50")
    bills = payouts.transfers(ctx.session, [r.id for r in rows])
    lines = [f"最近 {len(rows)} 笔提现："]
    links = []
    for wid, amount, status, reason, at, pay_transfer in rows:
        state = payouts.withdrawal_words(status, bills.get(wid), pay_transfer=pay_transfer, reason=reason)
        lines.append(f"{at.astimezone(CHINA):%m-%d} 申请号 {wid} {yuan(amount)} {state}")
        if ctx.config.pay.on and pay_transfer and status == WithdrawalStatus.APPROVED and len(links) < 2:
            links.append(f"申请号 {wid} 领取：{payouts.claim_url(ctx.config, wid, me.id)}")
    return Text("\n".join(lines + links))


# ---- the console's 重试 -----------------------------------------------------------------------------
@feature.console.post(r"/withdrawals/{id:\d{1,18}}/retry")
async def retry_page(request: web.Request) -> web.StreamResponse:
    wid = int(request.match_info["id"])
    config = live_config(request.config_dict)
    amount = await request.config_dict[WRITER].run(lambda s: payouts.retry(s, config, wid, request.config_dict[CLOCK].now()))
    return done(request, "/withdrawals", f"申请 {wid} 将重新转账 {yuan(amount)}：领取链接已发给分销员。")

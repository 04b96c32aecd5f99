"""Distributors as admins see them: GET /api/distributors (find by openid or code, or page through
them) and /api/distributors/{code}, and the console's 分销员 pages: the list (a search by code,
name or phone, filters, each distributor's figures, a sort by any of them, its CSV export: rules
in domain.distributor_list), and a distributor's page (balances and figures, rank and its
history, suspensions and open risk flags, the ledger and orders a page at a time, the team with
their figures, inviter changes) with forms to set the rank, to post an adjustment and to move the distributor to another
inviter (the suspend and reinstate forms post to handlers/risk.py). The forms call the same domain
functions as the API (domain.promotion.change_rank, domain.notices.adjust_and_tell,
domain.inviters.change_inviter), so the record names who acted and the distributor hears the same
notice either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kit.api import ApiModel, actor_of, ok, text
from kit.auditing import note
from kit.console import done, page, page_number, returns_to
from kit.csv_stream import stream_csv
from kit.scopes import principal_of
from kit.feature import Feature
from kit.app_keys import CLOCK, PACKS, READER, WRITER
from kit.live_settings import live_config
from domain import inviters, risk
from domain import suspension
from domain.commission import STATUS_NAMES
from domain.distributor_list import SORTS, Filters, Listed, export_page, list_page, listed
from domain.distributors import MAX_PAGE, PER_PAGE, DistributorAnswer, distributor_json, known_distributor
from domain.export_rows import local_time
from domain.formats import CHINA, month_of, parse_signed_yuan, plain_yuan
from domain.records import read_days
from domain.refusals import Refusal
from domain.ledger import BUCKETS, KIND_NAMES, MAX_ADJUSTMENT_FEN, balance
from domain.notices import adjust_and_tell
from domain.promotion import change_rank
from storage.models import Distributor
from storage.queries import distributor_by_code
from storage.tables import DISTRIBUTORS, ENTRIES, ORDERS, RANK_CHANGES

# Finding distributors and reading their pages serves finance (withdrawals, adjustments) and ops
# (tickets, campaigns by rank) alike; the shop system needs none of it. Changing a rank is the
# admin's; an adjustment is finance's, as over /api.
feature = Feature("distributors", scope=("finance", "ops"))
api = feature.api

LEDGER_SHOWN = 50
ORDERS_SHOWN = 20
TEAM_SHOWN = 100  # direct invitees listed on a page; the count says how many there are in all
MAX_REASON = 200
BUCKET_NAMES = dict(zip(BUCKETS, ("待结算", "可提现", "提现中", "已提现"), strict=True))
STATUS_LABELS = {"active": "正常", "exited": "已退出", "suspended": "已暂停"}


# ---- /api/distributors -------------------------------------------------------------------------
class Distributors(BaseModel):
    distributors: list[DistributorAnswer]
    total: int


class DistributorQuery(ApiModel):
    openid: str | None = Field(None, description="exact openid")
    code: str | None = Field(None, description="exact code")
    # The bound keeps the OFFSET within a 64-bit integer.
    page: int = Field(1, ge=1, le=MAX_PAGE, description=f"page number from 1 ({PER_PAGE} a page)")


@api.get("/distributors", summary="Find distributors by openid or code, or list them a page at a time",
         query=DistributorQuery, response=Distributors)
async def list_distributors(request: web.Request, query: DistributorQuery) -> web.Response:
    stmt = select(Distributor)
    if query.openid is not None:
        stmt = stmt.where(Distributor.openid == query.openid)
    if query.code is not None:
        stmt = stmt.where(Distributor.code == query.code.strip().upper())
    number = query.page

    def read(session: Session) -> dict[str, Any]:
        total = session.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = session.scalars(stmt.order_by(Distributor.id).offset((number - 1) * PER_PAGE).limit(PER_PAGE))
        return {"distributors": [distributor_json(session, d) for d in rows], "total": total}
    return ok(await request.config_dict[READER].run(read))


@api.get("/distributors/{code}", summary="One distributor with balances", response=DistributorAnswer,
         errors=(404,))
async def get_distributor(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    return ok(await request.config_dict[READER].run(lambda s: distributor_json(s, known_distributor(s, code))))


class InviterChange(ApiModel):
    noun: ClassVar[str] = "inviter_change"
    inviter_code: str = Field(min_length=1, max_length=16, description="the new inviter's code")
    # Optional in the schema so that a missing reason is answered 422 like an empty one (§4.1).
    reason: text(MAX_REASON) | None = Field(None, description="required: kept with the change and told to the "
                                                                "distributor")


@api.post("/distributors/{code}/inviter",
          summary="Move a distributor to another inviter, with a reason; past commissions stay as booked, later "
                  "orders pay the new upline; the distributor and both inviters are told. 422 for the distributor "
                  "themself, a new inviter in their own team (a cycle) or not active, or no reason",
          body=InviterChange, response=DistributorAnswer, errors=(404,), scope="admin")
async def change_inviter(request: web.Request, body: InviterChange) -> web.Response:
    if body.reason is None:
        raise Refusal("invalid_inviter_change", "A reason is required.", sentence="更换邀请人需要填写原因。",
                      details=[{"field": "reason", "problem": "a reason is required"}])
    code, reason, actor = request.match_info["code"], body.reason, actor_of(request)

    def apply(session: Session) -> dict[str, Any]:
        d, _ = inviters.change_inviter(session, code, body.inviter_code, reason, actor,
                                       request.config_dict[CLOCK].now())
        return distributor_json(session, d)
    moved = await request.config_dict[WRITER].run(apply)
    note(request, f"更换邀请人：{moved['code']} → {moved['inviter_code']}（{reason}）", moved["code"])
    return ok(moved)


# ---- the console's 分销员: the list and its export ---------------------------------------------------
# Each figure's column: (the sort's key, the header). The list's other columns do not sort.
FIGURE_COLUMNS = (("team", "直接团队"), ("month_sales", "本月销售额"), ("sales", "累计销售额"),
                  ("month_commission", "本月佣金"), ("commission", "累计佣金"), ("available", "可提现"),
                  ("pending", "待结算"))
LIST_HEADER = ("推广码", "姓名", "手机", "等级", "状态", "邀请人推广码", "邀请人", "直接团队", "本月销售额（元）",
               "累计销售额（元）", "本月佣金（元）", "累计佣金（元）", "可提现（元）", "待结算（元）", "注册时间")


def _filters(query: Mapping[str, str], ranks: Mapping[str, str]) -> tuple[Filters, list[str]]:
    """The list's filters from the page's query string (what is not understood is left out, and
    a date said so)."""
    problems: list[str] = []
    since, until = read_days(query, problems)
    rank, status, sort = query.get("rank", ""), query.get("status", ""), query.get("sort", "")
    return Filters(query=query.get("q", "").strip()[:50], rank=rank if rank in ranks else "",
                   status=status if status in STATUS_LABELS else "", since=since, until=until,
                   flagged=query.get("flagged") == "1", sort=sort if sort in SORTS else "registered",
                   descending=query.get("dir") != "asc"), problems


def _query(f: Filters, **changes: Any) -> str:
    """The list's query string for these filters, with `changes` (sort, dir) made."""
    values = {"q": f.query, "rank": f.rank, "status": f.status, "since": f.since or "", "until": f.until or "",
              "flagged": "1" if f.flagged else "", "sort": "" if f.sort == "registered" else f.sort,
              "dir": "" if f.descending else "asc", **changes}
    return urlencode({k: v for k, v in values.items() if v})


def _sort_links(f: Filters) -> dict[str, str]:
    """Each figure column's link: descending first, the other way when it is the sort already."""
    return {key: "/admin/distributors?" + _query(f, sort=key, dir="asc" if f.sort == key and f.descending else "")
            for key, _ in FIGURE_COLUMNS}


@feature.console.get("/distributors")
async def distributors_page(request: web.Request) -> web.Response:
    ranks = {r.key: r.name for r in live_config(request.config_dict).ranks}
    filters, problems = _filters(request.query, ranks)
    number, now = page_number(request, last=MAX_PAGE), request.config_dict[CLOCK].now()
    rows, total = await request.config_dict[READER].run(lambda s: list_page(s, filters, now, number))
    pages = max((total + PER_PAGE - 1) // PER_PAGE, 1)
    here = _query(filters)
    return page(request, "distributors.html", title="分销员", current="/distributors", f=filters, rows=rows,
                total=total, number=number, pages=pages, ranks=ranks, statuses=STATUS_LABELS, problems=problems,
                columns=FIGURE_COLUMNS, sort_links=_sort_links(filters), export="/admin/distributors.csv?" + here,
                filtered=any((filters.query, filters.rank, filters.status, filters.since, filters.until,
                              filters.flagged)),
                base="/admin/distributors?" + (here + "&" if here else ""))


def _cells(d: Listed, ranks: Mapping[str, str]) -> tuple[Any, ...]:
    return (d.code, d.name, d.phone, ranks.get(d.rank, d.rank), STATUS_LABELS.get(d.status, d.status),
            d.inviter_code or "", d.inviter_name or "", d.team, plain_yuan(d.month.sales_fen),
            plain_yuan(d.all_time.sales_fen), plain_yuan(d.month.commission_fen), plain_yuan(d.all_time.commission_fen),
            plain_yuan(d.available_fen), plain_yuan(d.pending_fen), local_time(d.registered_at))


@feature.console.get("/distributors.csv")
async def export_csv(request: web.Request) -> web.StreamResponse:
    """Every row the filters select, in the list's order, streamed a page at a time."""
    ranks = {r.key: r.name for r in live_config(request.config_dict).ranks}
    filters, _ = _filters(request.query, ranks)
    reader, now = request.config_dict[READER], request.config_dict[CLOCK].now()

    async def pages(offset: int) -> tuple[int, list[tuple[Any, ...]]]:
        after, rows = await reader.run(lambda s: export_page(s, filters, now, offset), slow=True)
        return after, [_cells(d, ranks) for d in rows]
    return await stream_csv(request, f"分销员-{now.astimezone(CHINA):%Y%m%d}.csv", LIST_HEADER, pages)


# ---- the console's 分销员: one distributor -------------------------------------------------------
def _team(session: Session, distributor_id: int, month: int) -> tuple[int, list[dict[str, Any]]]:
    """How many the distributor invited, and the first TEAM_SHOWN of them (newest first), each with
    their figures (team, sales and commission this month and in all) and their own direct invitees,
    every member with their direct count: two levels of the tree."""
    d = DISTRIBUTORS.c
    columns = (d.id, d.code, d.name, d.rank, d.status)
    size = session.scalar(select(func.count()).where(d.inviter_id == distributor_id)) or 0
    first = session.execute(select(*columns).where(d.inviter_id == distributor_id)
                            .order_by(d.id.desc()).limit(TEAM_SHOWN)).all()
    second = session.execute(select(*columns, d.inviter_id).where(d.inviter_id.in_([m.id for m in first]))
                             .order_by(d.id.desc())).all() if first else []
    ids = [m.id for m in first] + [m.id for m in second]
    counts = dict(session.execute(select(d.inviter_id, func.count()).where(d.inviter_id.in_(ids))
                                  .group_by(d.inviter_id)).all()) if ids else {}
    figures = {f.id: f for f in listed(session, [m.id for m in first], month)}

    def member(m: Any) -> dict[str, Any]:
        return {"code": m.code, "name": m.name, "rank": m.rank, "status": m.status, "direct": counts.get(m.id, 0)}
    return size, [{**member(m), "figures": figures[m.id], "members": [member(s) for s in second if s.inviter_id == m.id]}
                  for m in first]


def _paged(session: Session, stmt: Any, number: int, size: int) -> tuple[list[Any], bool]:
    """Page `number` of `stmt`'s rows, and whether there are more after it."""
    rows = session.execute(stmt.offset((number - 1) * size).limit(size + 1)).all()
    return rows[:size], len(rows) > size


def _profile(session: Session, code: str, now: datetime, ledger_no: int, orders_no: int) -> dict[str, Any] | None:
    d = distributor_by_code(session, code)
    if d is None:
        return None
    e, o, r = ENTRIES.c, ORDERS.c, RANK_CHANGES.c
    month = month_of(now).key
    size, team = _team(session, d.id, month)
    inviter = session.execute(select(DISTRIBUTORS.c.code, DISTRIBUTORS.c.name)
                              .where(DISTRIBUTORS.c.id == d.inviter_id)).first() if d.inviter_id else None
    ledger, more_ledger = _paged(session, select(e.created_at, e.kind, e.amount_fen, e.order_no)
                                 .where(e.distributor_id == d.id).order_by(e.created_at.desc(), e.id.desc()),
                                 ledger_no, LEDGER_SHOWN)
    orders, more_orders = _paged(session, select(o.order_no, o.amount_fen, o.refunded_fen, o.status, o.paid_at)
                                 .where(o.distributor_id == d.id).order_by(o.paid_at.desc(), o.order_no.desc()),
                                 orders_no, ORDERS_SHOWN)
    return {
        "d": d, "inviter": inviter, "balance": balance(session, d.id), "team_size": size, "team": team,
        "figures": listed(session, [d.id], month)[0],
        "ledger": ledger, "more_ledger": more_ledger, "orders": orders, "more_orders": more_orders,
        "changes": session.execute(select(RANK_CHANGES).where(r.distributor_id == d.id).order_by(r.id.desc())).all(),
        "suspensions": suspension.history(session, d.id), "flags": risk.open_flags(session, d.id),
        "inviter_changes": inviters.history(session, d.id),
    }


@feature.console.get("/distributors/{code}")
async def distributor_page(request: web.Request) -> web.Response:
    code, now = request.match_info["code"], request.config_dict[CLOCK].now()
    ledger_no, orders_no = page_number(request, "ledger"), page_number(request, "orders")
    profile = await request.config_dict[READER].run(lambda s: _profile(s, code, now, ledger_no, orders_no))
    if profile is None:
        return page(request, "distributor.html", title="分销员", current="/distributors", status=404, d=None, code=code)
    ranks = {r.key: r.name for r in live_config(request.config_dict).ranks}
    principal = principal_of(request)
    here = f"/admin/distributors/{quote(code, safe='')}?"
    return page(request, "distributor.html", title=profile["d"].name, current="/distributors", ranks=ranks,
                buckets=BUCKET_NAMES, kinds=KIND_NAMES, order_statuses=STATUS_NAMES, statuses=STATUS_LABELS,
                rule_names=risk.RULE_NAMES, ledger_no=ledger_no, orders_no=orders_no,
                ledger_base=f"{here}orders={orders_no}&", orders_base=f"{here}ledger={ledger_no}&",
                may_move=principal is not None and principal.may(frozenset()), **profile)


# ---- the console's forms ------------------------------------------------------------------------------
def _reason(form: Any) -> str:
    return " ".join(str(form.get("reason", "")).split())[:MAX_REASON]


@feature.console.post("/distributors/{code}/rank", scope="admin")
async def rank_form(request: web.Request) -> web.StreamResponse:
    code, form = request.match_info["code"], await request.post()
    back = f"/distributors/{quote(code, safe='')}"
    config, library, actor = live_config(request.config_dict), request.config_dict[PACKS], actor_of(request)
    rank, reason = str(form.get("rank", "")), _reason(form)
    known = {r.key: r.name for r in config.ranks}
    if rank not in known:
        return done(request, back, f"没有“{rank[:32]}”这个等级，请从列表中选择。", error=True)
    if not reason:
        return done(request, back, "调整等级需要填写原因（会记录在等级历史中）。", error=True)

    def apply(session: Session) -> str | None:
        d = distributor_by_code(session, code)
        if d is None:
            return None
        changed = change_rank(session, config, d.id, d.openid, d.rank, rank, request.config_dict[CLOCK].now(), reason=reason,
                              actor=actor, unlocks=library.unlocks)
        return "changed" if changed else "same"
    outcome = await request.config_dict[WRITER].run(apply)
    if outcome is None:
        return done(request, "/distributors", f"没有推广码为 {code[:16]} 的分销员。", error=True)
    if outcome == "same":
        return done(request, back, f"等级没有变化：已经是【{known[rank]}】。", error=True)
    return done(request, back, f"等级已调整为【{known[rank]}】，已通知分销员。")


@feature.console.post("/distributors/{code}/adjustments", scope="finance")
async def adjustment_form(request: web.Request) -> web.StreamResponse:
    code, form = request.match_info["code"], await request.post()
    back = returns_to(request, f"/distributors/{quote(code, safe='')}")
    actor, reason = actor_of(request), _reason(form)
    fen = parse_signed_yuan(str(form.get("amount", "")))  # AmountError: its sentence, back on the page
    if fen == 0:
        return done(request, back, "调整金额不能为 0。", error=True)
    if abs(fen) > MAX_ADJUSTMENT_FEN:
        return done(request, back, "调整金额太大了，请核对后重新填写。", error=True)
    if not reason:
        return done(request, back, "提交调整需要填写原因（会告知分销员）。", error=True)

    def apply(session: Session) -> bool:
        d = distributor_by_code(session, code)
        if d is None:
            return False
        adjust_and_tell(session, d.id, d.openid, fen, reason, actor, request.config_dict[CLOCK].now())
        return True
    if not await request.config_dict[WRITER].run(apply):
        return done(request, "/distributors", f"没有推广码为 {code[:16]} 的分销员。", error=True)
    return done(request, back, "调整已入账，已通知分销员。")


@feature.console.post("/distributors/{code}/inviter", scope="admin")
async def inviter_form(request: web.Request) -> web.StreamResponse:
    code, form = request.match_info["code"], await request.post()
    back = returns_to(request, f"/distributors/{quote(code, safe='')}")
    inviter_code, reason = str(form.get("inviter_code", "")).strip()[:16], _reason(form)
    if not inviter_code:
        return done(request, back, "请填写新邀请人的推广码。", error=True)
    if not reason:
        return done(request, back, "更换邀请人需要填写原因（会告知分销员）。", error=True)
    actor = actor_of(request)

    def apply(session: Session) -> tuple[str, bool]:
        d, moved = inviters.change_inviter(session, code, inviter_code, reason, actor, request.config_dict[CLOCK].now())
        return d.code, moved
    who, moved = await request.config_dict[WRITER].run(apply)
    if not moved:
        return done(request, back, f"邀请人没有变化：{who} 的邀请人已经是 {inviter_code.upper()}。",
                    error=True)
    return done(request, back, f"已将 {who} 的邀请人更换为 {inviter_code.upper()}，已通知分销员和新旧邀请人。")

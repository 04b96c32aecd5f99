"""Contests (CONTRACT §4.6): POST/GET /api/contests, the `contests` job that makes the month's
月度推广之星, opens contests at their start and settles them after their end, and 排行 (§5).

Rules and queries live in domain.contests (standings) and domain.contest_results (settlement).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kit.api import ApiModel, IdParam, PageQuery, RankAudience, checked_audience, ok
from kit.api import text as text_field
from kit.chat import Ctx, Incoming, active_only
from kit.console import done, page, page_number
from kit.feature import Feature
from kit.menu import MenuKey
from kit.scheduler import JOBS
from kit.app_keys import CLOCK, READER, WRITER
from kit.live_settings import live_config
from domain import campaigns
from domain import contest_results
from domain import contests
from domain.contest_results import show_value
from domain.formats import CHINA, AmountError, china_time, mask_name, parse_yuan, yuan
from domain.messages import Text
from domain.refusals import Refusal
from storage.models import Distributor
from storage.models_engage import ContestStatus
from storage.tables import CONTESTS

log = logging.getLogger(__name__)
feature = Feature("contests", scope="ops")
api = feature.api
BOARD = 10  # places 排行 shows


# ---- the job -------------------------------------------------------------------------------------
@feature.job("contests", "interval", minutes=1)
async def tick_contests(app: web.Application) -> int:
    """Make this month's 月度推广之星, open contests whose start has come and settle those whose
    end has passed (each in one unit of its own); the contests settled. A read first: nearly
    every minute there is nothing to do."""
    now = app[CLOCK].now()
    due = await app[READER].run(lambda s: contests.due(s, now))
    if due.star_missing:
        await app[WRITER].run(lambda s: contests.ensure_star(s, live_config(app), now), slow=True)
    if due.to_open:
        await app[WRITER].run(lambda s: contests.open_due(s, now))
    settled = 0
    for cid in due.to_settle:
        campaign = await app[WRITER].run(lambda s, cid=cid: contest_results.settle(s, cid, now), slow=True)
        if campaign is not None:
            settled += 1
            log.info("contest settled", extra={"contest": cid, "campaign": campaign})
    if settled:
        app[JOBS].start(campaigns.SEND_JOB, "contests")  # the results go out now, not at the next tick
    return settled


# ---- 排行 ----------------------------------------------------------------------------------------
@feature.command("排行", "top", menu=MenuKey.TOP)
@active_only
def on_top(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    star = contests.star(ctx.session, ctx.now)
    if star is None:  # the month has just begun and the job has not made it yet
        ctx.app[JOBS].start(tick_contests, "排行")
        return Text("本月排行榜正在生成，请稍后再发“排行”查看。")
    top = contests.live_standings(ctx.session, star, BOARD)
    lines = [f"🏆 {star.title} 实时排行"]
    lines += [f"{p.place}. {mask_name(p.name)}  {yuan(p.value)}" for p in top] or ["本月还没有人上榜，快来抢第一名！"]
    mine = contests.own_place(ctx.session, star.id, me.id)
    if mine is None:
        lines.append("\n您本月还没有销售，加油！回复“海报”分享给朋友，下单即可上榜。")
    else:
        place, value = mine
        lines.append(f"\n您的排名：第 {place} 名，本月销售额 {yuan(value)}")
        if place > BOARD and len(top) == BOARD:
            lines.append(f"再卖 {yuan(top[-1].value - value + 1)} 即可进入前 {BOARD} 名。")
    if star.prizes_fen:
        prizes = "、".join(f"第{i}名 {yuan(p)}" for i, p in enumerate(star.prizes_fen, start=1))
        lines.append(f"月底奖励：{prizes}")
    return Text("\n".join(lines))


# ---- /api/contests -------------------------------------------------------------------------------
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"\S")]
Prize = Annotated[int, Field(ge=1, le=10**10)]


class ContestIn(ApiModel):
    noun: ClassVar[str] = "contest"
    title: text_field(64)
    metric: Literal["sales", "sku_sales", "new_members"] = Field(
        description="sales: credited sales paid in the window less refunds; sku_sales: the same for `skus`; "
                    "new_members: active invitees registered in the window (no prizes)")
    skus: list[Sku] = Field(default_factory=list, max_length=100, description="required for sku_sales")
    starts_at: AwareDatetime = Field(description="RFC 3339 with a zone")
    ends_at: AwareDatetime = Field(description="RFC 3339 with a zone, after starts_at")
    prizes_fen: list[Prize] = Field(default_factory=list, max_length=100,
                                    description="prize by place, fen; must be empty for new_members")
    audience: Literal["all"] | RankAudience = "all"


class Standing(BaseModel):
    place: int
    code: str
    name: str
    value: int


class Winner(BaseModel):
    place: int
    code: str
    prize_fen: int


class ContestSummary(BaseModel):
    id: int
    title: str
    metric: Literal["sales", "sku_sales", "new_members"]
    skus: list[str]
    starts_at: datetime
    ends_at: datetime
    prizes_fen: list[int]
    audience: Any
    status: Literal["scheduled", "running", "settled"]
    source: str | None
    campaign_id: int | None
    created_at: datetime
    settled_at: datetime | None


class ContestOut(ContestSummary):
    standings: list[Standing] = Field(description="top 100: live while running, final once settled")
    winners: list[Winner] | None = Field(description="once settled: the places that won a prize")


class ContestList(BaseModel):
    contests: list[ContestSummary]
    total: int


class ContestId(IdParam):
    noun: ClassVar[str] = "contest"


def _summary(c: Any) -> dict[str, Any]:
    return {"id": c.id, "title": c.title, "metric": c.metric, "skus": list(c.skus or ()),
            "starts_at": china_time(c.starts_at), "ends_at": china_time(c.ends_at),
            "prizes_fen": list(c.prizes_fen or ()), "audience": c.audience, "status": c.status, "source": c.source,
            "campaign_id": c.campaign_id, "created_at": china_time(c.created_at),
            "settled_at": china_time(c.settled_at) if c.settled_at else None}


def _results(session: Session, c: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(standings, winners) of a contest: the top 100 (live while running, final once settled)
    with names, and once settled the places that won a prize (with name and value)."""
    if c.status == ContestStatus.SETTLED:
        final = c.winners or []
        standings = [{k: w[k] for k in ("place", "code", "name", "value")} for w in final]
        return standings, [w for w in final if w["prize_fen"] > 0]
    return [{"place": p.place, "code": p.code, "name": p.name, "value": p.value}
            for p in contests.live_standings(session, c)], None


def _json(session: Session, contest_id: int) -> dict[str, Any]:
    c = session.execute(select(CONTESTS).where(CONTESTS.c.id == contest_id)).first()
    if c is None:
        raise Refusal("not_found", f"No contest {contest_id}.")
    standings, won = _results(session, c)
    winners = None if won is None else [{k: w[k] for k in ("place", "code", "prize_fen")} for w in won]
    return {**_summary(c), "standings": standings, "winners": winners}


async def add_contest(request: web.Request, body: ContestIn) -> dict[str, Any]:
    """Create a contest (POST /api/contests and the console's form): the contest as the API shows
    it. Refusal (invalid_contest, 422) for bad fields or an unknown rank."""
    starts_at, ends_at = contests.check_window(body.starts_at, body.ends_at, body.metric, body.skus, body.prizes_fen)
    audience = checked_audience(live_config(request.config_dict), body.audience, "contest")
    now = request.config_dict[CLOCK].now()

    def create(session: Session) -> dict[str, Any]:
        cid = contests.create(session, title=body.title, metric=body.metric,
                              skus=sorted(set(body.skus)) if body.metric == "sku_sales" else [],
                              starts_at=starts_at, ends_at=ends_at,
                              prizes_fen=body.prizes_fen, audience=audience, now=now)
        assert cid is not None
        return _json(session, cid)
    data = await request.config_dict[WRITER].run(create, slow=True)  # the backfill may read many orders
    if ends_at <= now:
        request.config_dict[JOBS].start(tick_contests, "api")  # over already: settle it now
    return data


@api.post("/contests", summary="Create a contest: sales, sku_sales or new_members over a window",
          body=ContestIn, response=ContestOut, status=201)
async def create_contest(request: web.Request, body: ContestIn) -> web.Response:
    return ok(await add_contest(request, body), status=201)


def contest_page(session: Session, limit: int, offset: int) -> tuple[list[Any], int]:
    """A page of contests, newest first, and how many there are."""
    rows = session.execute(select(CONTESTS).order_by(CONTESTS.c.id.desc()).limit(limit).offset(offset)).all()
    return rows, session.scalar(select(func.count()).select_from(CONTESTS)) or 0


@api.get("/contests", summary="Contests, newest first", query=PageQuery, response=ContestList)
async def list_contests(request: web.Request, query: PageQuery) -> web.Response:
    def read(session: Session) -> dict[str, Any]:
        rows, total = contest_page(session, query.limit, query.offset)
        return {"contests": [_summary(c) for c in rows], "total": total}
    return ok(await request.config_dict[READER].run(read))


@api.get("/contests/{id}", summary="One contest with its standings (top 100) and, once settled, its winners",
         params=ContestId, response=ContestOut, errors=(404,))
async def get_contest(request: web.Request, params: ContestId) -> web.Response:
    return ok(await request.config_dict[READER].run(lambda s: _json(s, params.id)))


# ---- the console's 比赛 ----------------------------------------------------------------------------
PER_PAGE = 20
STATUS_NAMES = {"scheduled": "未开始", "running": "进行中", "settled": "已结算"}
METRIC_NAMES = {"sales": "销售额", "sku_sales": "指定商品销售额", "new_members": "新增成员"}
FIELD_NAMES = {"title": "标题", "metric": "指标", "skus": "商品编号", "starts_at": "开始时间", "ends_at": "结束时间",
               "prizes_fen": "奖金（元）", "audience": "受众"}
_LIST_SEPARATORS = re.compile(r"[,，、\s]+")
# In a list of prizes a comma separates, so "1,500" would be two prizes, ¥1 and ¥500: a comma
# between a digit and exactly three more reads both ways and is refused rather than guessed.
_GROUPED = re.compile(r"[\d.,，]*\d[,，]\d{3}(?!\d)[\d.,，]*")


def _form_problem(sentence: str) -> Refusal:
    """What is wrong with the console's contest form, as a Chinese sentence."""
    return Refusal("invalid_contest", sentence=sentence)


def _split(value: str) -> list[str]:
    return [v for v in _LIST_SEPARATORS.split(value) if v]


def _china_time(value: str, field: str) -> datetime:
    """A datetime-local value (2026-12-01T00:00) read as China time."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _form_problem(f"请填写{FIELD_NAMES[field]}（年-月-日 时:分，北京时间）。") from None
    return moment.replace(tzinfo=CHINA) if moment.tzinfo is None else moment


def contest_from_form(form: Any) -> ContestIn:
    """The console's form as the /api body, checked by the same model; a Refusal when it is not one."""
    prizes: list[int] = []
    typed = str(form.get("prizes", ""))
    if (grouped := _GROUPED.search(typed)) is not None:
        raise _form_problem(f"奖金里的“{grouped.group().strip(',，')}”有两种读法：多个奖金请用“, ”（逗号加空格）、顿号或空格分隔，"
                            "金额不写千位逗号，例如 1500, 800, 300。")
    for amount in _split(typed):
        try:
            prizes.append(parse_yuan(amount))
        except AmountError:
            raise _form_problem(f"奖金“{amount}”不是有效的金额：单位是元，大于 0，最多两位小数，多个用逗号分隔。") from None
    rank = str(form.get("audience", "all"))
    values = {"title": str(form.get("title", "")), "metric": str(form.get("metric", "")),
              "skus": _split(str(form.get("skus", ""))), "prizes_fen": prizes,
              "starts_at": _china_time(str(form.get("starts_at", "")), "starts_at"),
              "ends_at": _china_time(str(form.get("ends_at", "")), "ends_at"),
              "audience": "all" if rank == "all" else {"ranks": [rank]}}
    try:
        return ContestIn.model_validate(values)
    except ValidationError as e:
        named = dict.fromkeys(FIELD_NAMES.get(str(err["loc"][0]), str(err["loc"][0])) for err in e.errors())
        raise _form_problem(f"请检查这些字段：{'、'.join(named)}（标题最多 64 字，商品编号和奖金最多 100 个）。") from None


def _audience_name(audience: Any, config: Any) -> str:
    if audience == "all":
        return "全部分销员"
    known = {r.key: r.name for r in config.ranks}
    return "、".join(known.get(k, k) for k in audience.get("ranks", ()))


def _listing(request: web.Request, session: Session, number: int) -> dict[str, Any]:
    rows, total = contest_page(session, PER_PAGE, (number - 1) * PER_PAGE)
    config = live_config(request.config_dict)
    return {"contests": rows, "total": total, "number": number, "pages": max((total + PER_PAGE - 1) // PER_PAGE, 1),
            "audiences": {c.id: _audience_name(c.audience, config) for c in rows}}


async def _contests_page(request: web.Request, *, status: int = 200, error: str = "",
                         form: Any = None) -> web.Response:
    number = page_number(request)
    values = await request.config_dict[READER].run(lambda s: _listing(request, s, number))
    return page(request, "contests.html", title="比赛", current="/contests", status=status, error=error,
                form=form or {}, ranks=live_config(request.config_dict).ranks, statuses=STATUS_NAMES,
                metrics=METRIC_NAMES, **values)


@feature.console.get("/contests")
async def contests_page(request: web.Request) -> web.Response:
    return await _contests_page(request)


@feature.console.post("/contests")
async def create_contest_page(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        created = await add_contest(request, contest_from_form(form))
    except Refusal as e:  # the page again, with the form as typed (not the guard's redirect)
        return await _contests_page(request, status=422, error=e.sentence, form=form)
    return done(request, f"/contests/{created['id']}", f"比赛“{created['title']}”已创建（{STATUS_NAMES[created['status']]}）。")


@feature.console.get(r"/contests/{id:\d{1,18}}")
async def contest_detail_page(request: web.Request) -> web.Response:
    cid = int(request.match_info["id"])

    def read(session: Session) -> dict[str, Any] | None:
        c = session.execute(select(CONTESTS).where(CONTESTS.c.id == cid)).first()
        if c is None:
            return None
        standings, winners = _results(session, c)
        return {"contest": c, "standings": standings, "winners": winners,
                "audience": _audience_name(c.audience, live_config(request.config_dict))}
    values = await request.config_dict[READER].run(read)
    if values is None:
        return page(request, "contest.html", title="比赛", current="/contests", status=404, contest=None)
    return page(request, "contest.html", title=values["contest"].title, current="/contests", statuses=STATUS_NAMES,
                metrics=METRIC_NAMES, show=show_value, **values)

"""Contests (CONTRACT §4.6): POST/GET /api/contests, PATCH /api/contests/{id} (before it starts)
and POST /api/contests/{id}/end (settled at once), the `contests` job that makes the month's
月度推广之星, opens contests at their start and settles them after their end, 排行 (§5), and the
console's 比赛 (创建; 保存 and 结束 on a contest's page).

Rules and queries live in domain.contests (standings) and domain.contest_results (settlement).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kit.api import ApiModel, IdParam, PageQuery, RankAudience, checked_audience, ok
from kit.api import text as text_field
from kit.chat import Ctx, Incoming, active_only
from kit.auditing import note
from kit.console import done, page, page_number, returns_to
from kit.feature import Feature
from kit.menu import MenuKey
from kit.scheduler import JOBS
from kit.app_keys import CLOCK, READER, WRITER
from kit.live_settings import live_config
from domain import campaigns
from domain import contest_forms as forms
from domain import contest_results
from domain import contests
from content.console_pages import when
from domain.contest_results import show_value
from domain.formats import mask_name, yuan
from domain.messages import Text
from domain.refusals import Refusal
from storage.models import Distributor
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
        return contest_results.contest_json(session, cid)
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
        return {"contests": [contest_results.summary(c) for c in rows], "total": total}
    return ok(await request.config_dict[READER].run(read))


@api.get("/contests/{id}", summary="One contest with its standings (top 100) and, once settled, its winners",
         params=ContestId, response=ContestOut, errors=(404,))
async def get_contest(request: web.Request, params: ContestId) -> web.Response:
    return ok(await request.config_dict[READER].run(lambda s: contest_results.contest_json(s, params.id)))


class ContestEdit(ApiModel):
    noun: ClassVar[str] = "contest"
    model_config = ConfigDict(extra="forbid")
    title: text_field(64) | None = None
    starts_at: AwareDatetime | None = Field(None, description="RFC 3339 with a zone")
    ends_at: AwareDatetime | None = Field(None, description="RFC 3339 with a zone, after starts_at")
    prizes_fen: list[Prize] = Field(default_factory=list, max_length=100,
                                    description="prize by place, fen (omitted: unchanged)")


async def edit_contest(request: web.Request, cid: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Change a contest before it starts (the API's PATCH and the console's 保存): the contest."""
    now = request.config_dict[CLOCK].now()

    def work(session: Session) -> tuple[list[str], dict[str, Any]]:
        return contests.edit(session, cid, changes, now), contest_results.contest_json(session, cid)
    changed, data = await request.config_dict[WRITER].run(work, slow=True)  # a new window recounts its scores
    note(request, f"比赛 #{cid} 修改了：{'、'.join(forms.FIELD_NAMES[k] for k in changed) or '没有变化'}", cid)
    return data


async def end_contest(request: web.Request, cid: int) -> tuple[dict[str, Any], str]:
    """End a running contest now and settle it (the API's and the console's 结束): the contest and
    what happened, the audit row's note."""
    now = request.config_dict[CLOCK].now()

    def work(session: Session) -> tuple[dict[str, Any], str]:
        planned, campaign = contest_results.end_early(session, cid, now)
        data = contest_results.contest_json(session, cid)
        return data, (f"比赛 #{cid}「{data['title']}」已提前结束并结算（原定 {when(planned)} 结束），"
                      f"{len(data['winners'] or ())} 人获奖，结果由活动 {campaign} 发送。")
    data, summary = await request.config_dict[WRITER].run(work, slow=True)
    note(request, summary, cid)
    request.config_dict[JOBS].start(campaigns.SEND_JOB, "contest ended")  # the results go out now
    return data, summary


@api.patch("/contests/{id}", summary="Edit a contest before it starts: title, starts_at, ends_at, prizes_fen; "
           "422 once it has started", params=ContestId, body=ContestEdit, response=ContestOut, errors=(404, 422))
async def patch_contest(request: web.Request, params: ContestId, body: ContestEdit) -> web.Response:
    return ok(await edit_contest(request, params.id, body.model_dump(exclude_unset=True)))


@api.post("/contests/{id}/end", summary="End a running contest now: results counted at this moment, winners paid "
          "and told as at a normal end; 409 when it is settled or has not started", params=ContestId,
          response=ContestOut, errors=(404, 409))
async def end_contest_api(request: web.Request, params: ContestId) -> web.Response:
    return ok((await end_contest(request, params.id))[0])


# ---- the console's 比赛 ----------------------------------------------------------------------------
PER_PAGE = 20
STATUS_NAMES = {"scheduled": "未开始", "running": "进行中", "settled": "已结算"}
METRIC_NAMES = {"sales": "销售额", "sku_sales": "指定商品销售额", "new_members": "新增成员"}


def contest_from_form(form: Any) -> ContestIn:
    """The console's form as the /api body, checked by the same model; a Refusal when it is not one."""
    rank = str(form.get("audience", "all"))
    values = {"title": str(form.get("title", "")), "metric": str(form.get("metric", "")),
              "skus": forms.split(str(form.get("skus", ""))), "prizes_fen": forms.prizes(str(form.get("prizes", ""))),
              "starts_at": forms.china_moment(str(form.get("starts_at", "")), "starts_at"),
              "ends_at": forms.china_moment(str(form.get("ends_at", "")), "ends_at"),
              "audience": "all" if rank == "all" else {"ranks": [rank]}}
    try:
        return ContestIn.model_validate(values)
    except ValidationError as e:
        raise forms.problem(f"请检查这些字段：{_named(e)}（标题最多 64 字，商品编号和奖金最多 100 个）。") from None


def _named(e: ValidationError) -> str:
    return "、".join(dict.fromkeys(forms.FIELD_NAMES.get(str(err["loc"][0]), str(err["loc"][0])) for err in e.errors()))


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
        standings, winners = contest_results.results(session, c)
        return {"contest": c, "standings": standings, "winners": winners,
                "audience": _audience_name(c.audience, live_config(request.config_dict))}
    values = await request.config_dict[READER].run(read)
    if values is None:
        return page(request, "contest.html", title="比赛", current="/contests", status=404, contest=None)
    return page(request, "contest.html", title=values["contest"].title, current="/contests", statuses=STATUS_NAMES,
                metrics=METRIC_NAMES, show=show_value, local=forms.local_input, prize_list=forms.yuan_list,
                now=request.config_dict[CLOCK].now(), **values)


@feature.console.post(r"/contests/{id:\d{1,18}}/end")
async def end_contest_page(request: web.Request) -> web.Response:
    cid = int(request.match_info["id"])
    returns_to(request, f"/contests/{cid}")
    _, summary = await end_contest(request, cid)
    return done(request, f"/contests/{cid}", summary)


@feature.console.post(r"/contests/{id:\d{1,18}}/edit")
async def edit_contest_page(request: web.Request) -> web.Response:
    cid, form = int(request.match_info["id"]), await request.post()
    returns_to(request, f"/contests/{cid}")
    try:
        edit = ContestEdit.model_validate({
            "title": str(form.get("title", "")), "prizes_fen": forms.prizes(str(form.get("prizes", ""))),
            "starts_at": forms.china_moment(str(form.get("starts_at", "")), "starts_at"),
            "ends_at": forms.china_moment(str(form.get("ends_at", "")), "ends_at")})
    except ValidationError as e:
        raise forms.problem(f"请检查这些字段：{_named(e)}（标题最多 64 字，奖金最多 100 个）。") from None
    data = await edit_contest(request, cid, edit.model_dump(exclude_none=True))
    return done(request, f"/contests/{cid}", f"比赛“{data['title']}”已保存（{STATUS_NAMES[data['status']]}）。")

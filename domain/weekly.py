"""The weekly report as pure functions (CONTRACT §5): the week a run reports on, the figures it
shows, the suggestions drawn from them by rules, and its text. No I/O: the weekly-report feature
loads the figures a batch of distributors at a time (domain.figures) and queues what these make.

A run in the week starting Monday 00:00 (Asia/Shanghai) reports on the 7 days before that Monday
("上周") against the 7 days before those ("前一周"), whenever in the week it runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction

from domain.figures import Member, Sales, Window
from domain.formats import CHINA, mask_name, week_start, yuan
from domain.ranks import RankGap, RankRule, next_rank_gap, rank_index

WEEK = timedelta(days=7)
CLOSE_TO_RANK = Fraction(7, 10)  # both requirements at least this far: the rank is within reach
MAX_SUGGESTIONS = 2
SCRIPT_TITLES = 3
TITLE_CHARS = 16


@dataclass(frozen=True)
class ReportWeek:
    monday: datetime  # 00:00 China time on the Monday of the run's week

    @property
    def reported(self) -> tuple[datetime, datetime]:
        """The 7 days before the Monday."""
        return self.monday - WEEK, self.monday

    @property
    def previous(self) -> tuple[datetime, datetime]:
        return self.monday - 2 * WEEK, self.monday - WEEK

    @property
    def windows(self) -> tuple[Window, Window]:
        return self.reported, self.previous

    @functools.cached_property
    def label(self) -> str:
        """The Monday as YYYYMMDD (chart links)."""
        return f"{self.monday:%Y%m%d}"

    @functools.cached_property
    def _key_prefix(self) -> str:
        return f"weekly:{self.monday.date().isoformat()}:"

    @property
    def last_day(self) -> date:
        return (self.monday - timedelta(days=1)).date()

    def key(self, distributor_id: int) -> str:
        """The outbox key of a distributor's report for this week: one report a week each."""
        return f"{self._key_prefix}{distributor_id}"


def report_week(now: datetime) -> ReportWeek:
    return ReportWeek(week_start(now))


def week_of_label(label: str) -> ReportWeek | None:
    """The week a YYYYMMDD label names, or None unless it is a Monday."""
    try:
        monday = datetime.strptime(label, "%Y%m%d").replace(tzinfo=CHINA)
    except ValueError:
        return None
    return ReportWeek(monday) if monday.weekday() == 0 else None


# ---- the figures ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Team:
    """The direct invitees' week."""

    size: int  # active direct invitees
    sold: int  # of them, those with credited sales in the week reported
    sales_fen: tuple[int, int]  # reported, previous
    top: tuple[str, int] | None  # who sold most in the week reported (name unmasked), and how much


def team_week(size: int, members: Sequence[Member]) -> Team:
    sellers = [m for m in members if m.sales[0].fen > 0]
    best = min(sellers, key=lambda m: (-m.sales[0].fen, m.id), default=None)
    return Team(size, len(sellers), (sum(m.sales[0].fen for m in members), sum(m.sales[1].fen for m in members)),
                (best.name, best.sales[0].fen) if best else None)


@dataclass(frozen=True)
class WeekFigures:
    """One distributor's figures: pairs are (week reported, week before)."""

    name: str
    rank: str
    sales: tuple[Sales, Sales]
    earnings_fen: tuple[int, int]
    new_members: tuple[int, int]
    personal_sales_fen: int  # completed, all time, less refunds (ranks)
    team: Team | None  # None without direct invitees
    bonus: tuple[str, ...] = ()  # this month's team bonus so far and the next tier (domain.plans.bonus_lines)

    @property
    def team_size(self) -> int:
        return self.team.size if self.team else 0


@dataclass(frozen=True)
class WeekContent:
    """What the live content packs offer, the same for everyone in a run."""

    scripts: tuple[str, ...] = ()  # titles of the newest live scripts
    new_posters: tuple[tuple[str, int], ...] = ()  # (pack name, posters) of versions gone live in the week reported


# ---- suggestions: rules drawn from the figures ------------------------------------------------------
Rule = Callable[[WeekFigures, RankGap | None, WeekContent], str | None]


def suggest_scripts(f: WeekFigures, gap: RankGap | None, content: WeekContent) -> str | None:
    """No credited order in the week reported: the newest scripts to get going again."""
    if f.sales[0].orders:
        return None
    if not content.scripts:
        return "上周还没有推广订单。发送“海报”获取专属推广海报，分享给朋友试试。"
    titles = "".join(f"《{t[:TITLE_CHARS]}》" for t in content.scripts[:SCRIPT_TITLES])
    return f"上周还没有推广订单。发一条朋友圈试试：发送“话术”获取最新话术{titles}。"


def suggest_rank(f: WeekFigures, gap: RankGap | None, content: WeekContent) -> str | None:
    """Close to the next rank (or already there): what is missing."""
    if gap is None:
        return None
    if gap.met:
        return f"您已满足「{gap.name}」的全部升级条件，升级后佣金比例更高。"
    if not gap.within(CLOSE_TO_RANK):
        return None
    return f"离「{gap.name}」只差 {missing(gap, '和')}，加把劲就能升级！"


def suggest_posters(f: WeekFigures, gap: RankGap | None, content: WeekContent) -> str | None:
    """A pack version went live in the week reported: its posters."""
    packs = [(name, n) for name, n in content.new_posters if n]
    if not packs:
        return None
    names = "、".join(f"「{name}」" for name, _ in packs)
    return f"新内容{names}上线了，有 {sum(n for _, n in packs)} 张新海报：发送“海报”获取。"


RULES: tuple[Rule, ...] = (suggest_scripts, suggest_rank, suggest_posters)


def keep_going(f: WeekFigures) -> str:
    if f.sales[0].fen > f.sales[1].fen:
        return "上周销售额比前一周有增长，保持节奏！发送“海报”把专属海报分享给更多朋友。"
    return "把专属海报分享给更多朋友，邀请他们扫码下单：发送“海报”获取。"


def suggestions(f: WeekFigures, gap: RankGap | None, content: WeekContent) -> list[str]:
    """One or two suggestions: the rules that apply, in order, else a word to keep going."""
    found = [s for rule in RULES if (s := rule(f, gap, content)) is not None]
    return found[:MAX_SUGGESTIONS] or [keep_going(f)]


# ---- the text -------------------------------------------------------------------------------------
def trend(this: int, last: int, amount: Callable[[int], str]) -> str:
    """↑ 23% / ↓ 10% against a positive figure; ↑ ¥12.00 / ↑ 2 人 against nothing; 持平."""
    diff = this - last
    if diff == 0:
        return "持平"
    arrow = "↑" if diff > 0 else "↓"
    if last <= 0:
        return f"{arrow} {amount(abs(diff))}"
    pct = (abs(diff) * 200 + last) // (2 * last)  # rounded half up, in integers
    return f"{arrow} {pct}%" if pct else f"{arrow} 不到 1%"


def people(n: int) -> str:
    return f"{n} 人"


def missing(gap: RankGap, joiner: str = "、") -> str:
    parts = ([f"{yuan(gap.missing_sales_fen)} 个人销售额"] if gap.missing_sales_fen else []) + \
            ([f"{gap.missing_members} 位直属成员"] if gap.missing_members else [])
    return joiner.join(parts)


def rank_lines(f: WeekFigures, ranks: Sequence[RankRule], gap: RankGap | None) -> list[str]:
    current = ranks[rank_index(ranks, f.rank)].name if ranks else f.rank
    if gap is None:
        return [f"等级：{current}（已是最高等级）"]
    if gap.met:
        return [f"等级：{current}，已满足「{gap.name}」的全部条件，即将升级"]
    nxt = ranks[rank_index(ranks, gap.key)]
    return [f"等级：{current}，升级「{gap.name}」还差 {missing(gap)}",
            f"（个人销售额 {yuan(f.personal_sales_fen)}/{yuan(nxt.min_sales_fen)}，"
            f"直属成员 {f.team_size}/{nxt.min_team_size} 人）"]


def report_text(f: WeekFigures, ranks: Sequence[RankRule], content: WeekContent, week: ReportWeek) -> str:
    """The report's text; it always contains 周报."""
    gap = next_rank_gap(ranks, f.rank, f.personal_sales_fen, f.team_size)
    start, end = week.reported[0], week.last_day
    (sales, sales_before), (earned, earned_before) = f.sales, f.earnings_fen
    lines = [f"【分销周报】{f.name}，您好！这是您上周（{start.month}月{start.day}日–{end.month}月{end.day}日）的成绩：",
             f"· 销售额 {yuan(sales.fen)}（{sales.orders} 笔），前一周 {yuan(sales_before.fen)}，"
             f"{trend(sales.fen, sales_before.fen, yuan)}",
             f"· 收益 {yuan(earned)}，前一周 {yuan(earned_before)}，{trend(earned, earned_before, yuan)}",
             f"· 新增直属成员 {f.new_members[0]} 人，前一周 {f.new_members[1]} 人，"
             f"{trend(*f.new_members, people)}"]
    if f.team is not None:
        t = f.team
        top = f"，销售冠军 {mask_name(t.top[0])}（{yuan(t.top[1])}）" if t.top else ""
        lines.append(f"团队：直属成员 {t.size} 人，上周 {t.sold} 人出单，团队销售额 {yuan(t.sales_fen[0])}"
                     f"（{trend(*t.sales_fen, yuan)}）{top}")
    lines += f.bonus
    lines += rank_lines(f, ranks, gap)
    lines.append("建议：")
    lines += [f"{i}. {s}" for i, s in enumerate(suggestions(f, gap, content), 1)]
    lines.append("回复“退订周报”可不再接收。")
    return "\n".join(lines)

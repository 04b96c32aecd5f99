"""Settling a contest (CONTRACT §4.6): the final standings recounted from the orders, the prizes
paid into the ledger, a notice to each winner and the results sent to the audience, in one unit.

Exactly once: the unit starts with a guarded status update (`WHERE status != 'settled'`), which
on PostgreSQL also makes a second settler wait for the first and then find nothing to do; a
killed process commits nothing of it, and the next run does it all. The reward's ledger entry
(ref `contest:<id>`, unique per distributor and kind), the notices' outbox keys and the
campaign's source would refuse a second posting anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain import campaigns
from domain.contests import SALES_METRICS, TOP, Place, live_standings, locked, member_totals, placed, places
from domain.contests import sales_totals
from domain.formats import china_time, mask_name, yuan
from domain.ledger import Delta, add_to_balances, append_entries
from domain.messages import Text
from domain.outbox_rows import Queued, enqueue_many, template_data
from domain.refusals import Refusal
from storage.models_engage import ContestStatus
from storage.models_ledger import EntryKind
from storage.tables import CONTESTS

RESULT_LINES = 10  # places named in the results message


def contest_ref(contest_id: int) -> str:
    return f"contest:{contest_id}"


def final_standings(session: Session, contest: Any, limit: int = TOP) -> list[Place]:
    """The standings counted from the orders (or the members) themselves, not the running totals."""
    if contest.metric in SALES_METRICS:
        totals = sales_totals(contest.metric, contest.skus or (), contest.starts_at, contest.ends_at)
    else:
        totals = member_totals(contest.starts_at, contest.ends_at)
    return places(session, placed(totals.subquery(), contest.audience, limit))


def prizes(contest: Any) -> list[int]:
    """Prizes by place. A new_members contest pays nothing, whatever its row says: paying for
    recruitment is the mark of pyramid selling."""
    return [] if contest.metric == "new_members" else [int(p) for p in contest.prizes_fen or ()]


def show_value(metric: str, value: int) -> str:
    return f"{value}人" if metric == "new_members" else yuan(value)


def settle(session: Session, contest_id: int, now: datetime) -> int | None:
    """Settle a contest whose window has ended: the results campaign's id, or None when there
    was nothing to do (not ended, or settled already)."""
    c = CONTESTS.c
    done = session.execute(update(CONTESTS).where(c.id == contest_id, c.status != ContestStatus.SETTLED,
                                                  c.ends_at <= now)
                           .values(status=ContestStatus.SETTLED, settled_at=now)).rowcount
    if not done:
        return None
    contest = session.execute(select(CONTESTS).where(c.id == contest_id)).one()
    prize_of = prizes(contest)
    final = final_standings(session, contest, max(TOP, len(prize_of)))
    won = [(p, prize_of[p.place - 1]) for p in final if p.place <= len(prize_of)]
    ref = contest_ref(contest_id)
    append_entries(session, [{"distributor_id": p.distributor_id, "kind": EntryKind.REWARD, "amount_fen": fen,
                              "ref": ref, "created_at": now} for p, fen in won])
    add_to_balances(session, {p.distributor_id: Delta(available_fen=fen) for p, fen in won})
    notices = []
    for p, fen in won:
        text = Text(f"恭喜您在“{contest.title}”中获得第{p.place}名（{show_value(contest.metric, p.value)}）！"
                    f"奖励 {yuan(fen)} 已计入您的可提现余额，回复“收益”查看。")
        notices.append(Queued(f"{ref}:won:{p.distributor_id}", p.openid, text, template_data(text, "获奖通知")))
    enqueue_many(session, notices, now=now)
    campaign = campaigns.schedule(session, title=f"{contest.title}结果"[:64], kind="contest",
                                  text=results_text(contest.title, contest.metric, final, prize_of),
                                  audience=contest.audience, send_at=now, now=now, source=ref)
    winners = [{"place": p.place, "distributor_id": p.distributor_id, "code": p.code, "name": p.name,
                "value": p.value, "prize_fen": prize_of[p.place - 1] if p.place <= len(prize_of) else 0}
               for p in final]
    session.execute(update(CONTESTS).where(c.id == contest_id).values(winners=winners, campaign_id=campaign.id))
    return campaign.id


def end_early(session: Session, contest_id: int, now: datetime) -> tuple[datetime, int]:
    """End a running contest now (its end moved to `now`) and settle it in the same unit: the
    results counted at this moment, the winners paid and told as at a normal end. (The end it had,
    the results campaign's id.) Refusal not_found, contest_settled once settled, contest_not_started
    before its start."""
    c = locked(session, contest_id)
    if c.status == ContestStatus.SETTLED:
        raise Refusal("contest_settled", f"Contest {contest_id} is settled already.", details={"status": c.status})
    if c.starts_at > now:
        raise Refusal("contest_not_started", f"Contest {contest_id} has not started; edit it instead.",
                      details={"status": c.status})
    if c.ends_at > now:
        session.execute(update(CONTESTS).where(CONTESTS.c.id == contest_id).values(ends_at=now))
    campaign = settle(session, contest_id, now)
    assert campaign is not None  # the row is ours (locked) and its end has come
    return c.ends_at, campaign


# ---- a contest as /api and the console show it ----------------------------------------------------
def summary(c: Any) -> dict[str, Any]:
    return {"id": c.id, "title": c.title, "metric": c.metric, "skus": list(c.skus or ()),
            "starts_at": china_time(c.starts_at), "ends_at": china_time(c.ends_at),
            "prizes_fen": list(c.prizes_fen or ()), "audience": c.audience, "status": c.status, "source": c.source,
            "campaign_id": c.campaign_id, "created_at": china_time(c.created_at),
            "settled_at": china_time(c.settled_at) if c.settled_at else None}


def results(session: Session, c: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(standings, winners) of a contest: the top 100 (live while running, final once settled)
    with names, and once settled the places that won a prize (with name and value)."""
    if c.status == ContestStatus.SETTLED:
        final = c.winners or []
        standings = [{k: w[k] for k in ("place", "code", "name", "value")} for w in final]
        return standings, [w for w in final if w["prize_fen"] > 0]
    return [{"place": p.place, "code": p.code, "name": p.name, "value": p.value}
            for p in live_standings(session, c)], None


def contest_json(session: Session, contest_id: int) -> dict[str, Any]:
    """A contest as /api shows it, with standings and winners; Refusal not_found."""
    c = session.execute(select(CONTESTS).where(CONTESTS.c.id == contest_id)).first()
    if c is None:
        raise Refusal("not_found", f"No contest {contest_id}.")
    standings, won = results(session, c)
    winners = None if won is None else [{k: w[k] for k in ("place", "code", "prize_fen")} for w in won]
    return {**summary(c), "standings": standings, "winners": winners}


def results_text(title: str, metric: str, final: list[Place], prize_of: list[int]) -> str:
    """The results for the audience: the top places with masked names, within a campaign's limit."""
    head = f"【{title}】结果揭晓"
    if not final:
        return f"{head}\n本期没有产生名次，下次活动再见！"
    lines = []
    for p in final[:RESULT_LINES]:
        line = f"第{p.place}名 {mask_name(p.name)} {show_value(metric, p.value)}"
        if p.place <= len(prize_of):
            line += f" 奖励{yuan(prize_of[p.place - 1])}"
        lines.append(line)
    tail = "获奖奖励已发放到获奖者的可提现余额。感谢大家的努力！" if prize_of else "感谢大家的努力！"
    while lines:
        text = "\n".join([head, *lines, tail])
        if len(text) <= campaigns.MAX_TEXT:
            return text
        lines.pop()
    return head[:campaigns.MAX_TEXT]

"""Campaigns: one message to an audience of active distributors, sent through the outbox.

The message is stored once (an outbox body); each recipient gets an outbox row pointing to it,
under the unique key `campaign:<id>:<openid>`, so a recipient is queued once whatever runs twice.
Rows are added in batches by distributor id (`enqueue_batch`), each batch one unit that also moves
the campaign's cursor: memory does not grow with the audience and a killed process resumes where
the last committed batch ended. The audience is fixed when sending starts: distributors who
register later are not added. Progress is read from the outbox rows themselves.

The mass channel (群发) queues one row per chunk of up to 10,000 openids instead; its
`clientmsgid` is derived from the campaign and the chunk, so WeChat refuses a repeat after a crash
(45065, naming the first send's msg_id). WeChat's report of a chunk, MASSSENDJOBFINISH, is kept by
msg_id as it comes (`keep_mass_report`), and a chunk's counts join its row's msg_id to the reports
when they are read: a report that arrives before its send is recorded (the process was killed
between WeChat's answer and the mark) counts once the mark names that msg_id, whichever commits
first. A chunk WeChat never reports on stops holding its campaign back after MASS_REPORT_WAIT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, literal_column, select
from sqlalchemy.orm import Session

from domain.campaign_messages import Draft, check, waits_for_upload
from domain.jobs import JobRef
from domain.messages import Text, to_json
from domain.outbox_rows import template_data
from storage.db import delete_chunk, dialect_insert, is_postgres
from storage.models import DistributorStatus, OutboxBody, OutboxStatus, UtcDateTime
from storage.models_campaigns import Campaign, CampaignImage, CampaignStatus
from storage.tables import DISTRIBUTORS, MASS_REPORTS, OUTBOX

log = logging.getLogger(__name__)
KINDS = ("contest", "training", "notice")
CHANNELS = ("service", "mass")
MAX_TEXT = 600
BATCH = 5_000  # recipients queued per unit (service channel)
# The job that queues due campaigns (handlers/campaigns.py); contests start it when their results are due.
SEND_JOB = JobRef("campaigns")
MASS_CHUNK = 10_000  # openids per mass/send call (WeChat's limit)
MASS_REPORT_WAIT = timedelta(minutes=10)  # how long a campaign waits for WeChat's MASSSENDJOBFINISH
MASS_OPENID = "*"  # the openid column of a mass row: its recipients are in the payload
OPEN = (OutboxStatus.PENDING, OutboxStatus.SENDING)
FINAL_COUNTS_CHUNK = 100  # campaigns given their final counts per unit (keep_final_counts)


def campaign_key(campaign_id: int, openid: str) -> str:
    return f"campaign:{campaign_id}:{openid}"


def audience_where(audience: Any) -> list[Any]:
    """WHERE clauses on DISTRIBUTORS of an audience: "all" or {"ranks": [...]}, active
    distributors only (campaigns, and the contests that place them)."""
    where = [DISTRIBUTORS.c.status == DistributorStatus.ACTIVE]
    if isinstance(audience, dict):
        where.append(DISTRIBUTORS.c.rank.in_(list(audience.get("ranks") or [])))
    return where


def count_audience(session: Session, audience: Any, max_id: int | None = None) -> int:
    where = audience_where(audience)
    if max_id is not None:
        where.append(DISTRIBUTORS.c.id <= max_id)
    return session.scalar(select(func.count()).select_from(DISTRIBUTORS).where(*where)) or 0


def audience_sizes(session: Session) -> dict[str, int]:
    """How many active distributors hold each rank key (the audiences an admin picks from; "all"
    is their sum): one grouped read of the (rank, status) index."""
    d = DISTRIBUTORS.c
    return {rank: int(n) for rank, n in session.execute(
        select(d.rank, func.count()).where(d.status == DistributorStatus.ACTIVE).group_by(d.rank))}


def schedule(session: Session, *, title: str, kind: str, text: str, audience: Any, send_at: datetime,
             now: datetime, channel: str = "service", source: str | None = None,
             draft: Draft | None = None, image: bytes | None = None) -> Campaign:
    """A new campaign, status scheduled, with its audience counted. With `source` (what made it,
    e.g. a pack version's announcement) the campaign is made once: a second call returns the first.
    An image or news `draft` (domain.campaign_messages) keeps its picture, uploaded when sending starts."""
    if source is not None:
        existing = session.scalar(select(Campaign).where(Campaign.source == source))
        if existing is not None:
            return existing
    draft = draft or Draft(title, "text", text)
    kind_of_image = check(draft, image)
    note = Text(text or title)
    payload = to_json(note) if kind_of_image is None else {"type": "upload"}  # completed when uploaded
    body = OutboxBody(payload={**payload, "template": template_data(note, title)}, created_at=now)
    session.add(body)
    session.flush()
    campaign = Campaign(title=title, kind=kind, channel=channel, format=draft.format, text=text,
                        article={"body": draft.body} if draft.format == "news" else None, audience=audience,
                        status=CampaignStatus.SCHEDULED, send_at=send_at, total=count_audience(session, audience),
                        body_id=body.id, cursor=0, enqueued=False, source=source, created_at=now)
    session.add(campaign)
    session.flush()
    if kind_of_image is not None and image is not None:
        session.add(CampaignImage(campaign_id=campaign.id, content=image, content_type=kind_of_image))
        session.flush()
    return campaign


def cancel(session: Session, campaign_id: int, now: datetime) -> Campaign | None:
    """Cancel a scheduled campaign. None when there is none; the campaign unchanged when it has
    already started (the caller answers 409)."""
    c = session.get(Campaign, campaign_id, with_for_update=is_postgres(session))
    if c is not None and c.status == CampaignStatus.SCHEDULED:
        c.status, c.finished_at = CampaignStatus.CANCELLED, now
    return c


def due(session: Session, now: datetime) -> list[int]:
    """Campaigns to work on: scheduled and due, or sending."""
    return list(session.scalars(select(Campaign.id).where(
        ((Campaign.status == CampaignStatus.SCHEDULED) & (Campaign.send_at <= now))
        | (Campaign.status == CampaignStatus.SENDING)).order_by(Campaign.id)))


def enqueue_batch(session: Session, campaign_id: int, now: datetime) -> bool:
    """One unit of work on a campaign: start it (fix the audience), queue the next batch of
    recipients, or mark it done once every row is sent or failed. True while there is more to do
    at once (the caller loops); False when the campaign waits for the outbox or is finished."""
    c = session.get(Campaign, campaign_id, with_for_update=is_postgres(session))
    if c is None or c.status not in (CampaignStatus.SCHEDULED, CampaignStatus.SENDING):
        return False
    if c.status == CampaignStatus.SCHEDULED:
        if c.send_at > now or waits_for_upload(session, c.id):  # the job uploads the picture first
            return False
        c.audience_max_id = session.scalar(select(func.max(DISTRIBUTORS.c.id))) or 0
        c.total = count_audience(session, c.audience, c.audience_max_id)
        c.status, c.started_at = CampaignStatus.SENDING, now
        log.info("campaign started", extra={"campaign": c.id, "channel": c.channel, "total": c.total})
        return True
    if not c.enqueued:
        queued = (_queue_mass if c.channel == "mass" else _queue_service)(session, c, now)
        if queued:
            session.info["outbox"] = True
            return True
        c.enqueued = True
        c.total = session.scalar(select(func.count()).select_from(OUTBOX).where(
            OUTBOX.c.body_id == c.body_id, OUTBOX.c.openid != MASS_OPENID)) or 0
        c.total += _mass_recipients(session, c.body_id)
        log.info("campaign queued", extra={"campaign": c.id, "total": c.total})
        return True
    if _open_rows(session, c.body_id) or (c.channel == "mass" and _awaiting_reports(session, c.body_id, now)):
        return False
    c.status, c.finished_at = CampaignStatus.DONE, now
    log.info("campaign done", extra={"campaign": c.id, "total": c.total})
    return False


def _batch_ids(c: Campaign, size: int) -> Any:
    return (select(DISTRIBUTORS.c.id, DISTRIBUTORS.c.openid)
            .where(*audience_where(c.audience), DISTRIBUTORS.c.id > c.cursor, DISTRIBUTORS.c.id <= c.audience_max_id)
            .order_by(DISTRIBUTORS.c.id).limit(size))


def _queue_service(session: Session, c: Campaign, now: datetime) -> int:
    """The next batch of recipients as outbox rows, in one INSERT ... SELECT."""
    batch = _batch_ids(c, BATCH).subquery()
    last, n = session.execute(select(func.max(batch.c.id), func.count())).one()
    if not n:
        return 0
    when = literal(now, UtcDateTime())
    rows = select(literal(campaign_key(c.id, "")) + DISTRIBUTORS.c.openid, DISTRIBUTORS.c.openid,
                  literal_column("'{}'"), literal(OutboxStatus.PENDING.value), literal(0), when, when,
                  literal(c.body_id)).where(
        *audience_where(c.audience), DISTRIBUTORS.c.id > c.cursor, DISTRIBUTORS.c.id <= last)
    insert = dialect_insert(session, OUTBOX).from_select(
        ["key", "openid", "payload", "status", "attempts", "next_attempt_at", "created_at", "body_id"], rows)
    session.execute(insert.on_conflict_do_nothing(index_elements=["key"]))
    c.cursor = last
    return n


def _queue_mass(session: Session, c: Campaign, now: datetime) -> int:
    """The next chunk of up to 10,000 openids as one mass row (a chunk of one goes as a service row:
    WeChat's mass call needs two openids at least)."""
    chunk = session.execute(_batch_ids(c, MASS_CHUNK)).all()
    if not chunk:
        return 0
    first, last = chunk[0].id, chunk[-1].id
    openids = [r.openid for r in chunk]
    key = f"campaign:{c.id}:mass:{first}"
    payload: dict[str, Any] = {"mass": openids,
                               "clientmsgid": f"distbot-{c.id}-{first}-{int(c.created_at.timestamp())}"}
    openid = MASS_OPENID
    if len(openids) == 1:  # as a customer-service message: an uploaded article goes as its news card
        service = (session.get(OutboxBody, c.body_id) or OutboxBody(payload={})).payload.get("service") or {}
        key, payload, openid = campaign_key(c.id, openids[0]), service, openids[0]
    session.execute(dialect_insert(session, OUTBOX).values(
        key=key, openid=openid, payload=payload, status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now,
        created_at=now, body_id=c.body_id).on_conflict_do_nothing(index_elements=["key"]))
    c.cursor = last
    return len(openids)


def _mass_recipients(session: Session, body_id: int | None) -> int:
    return sum(len(p.get("mass", ())) for p in session.scalars(select(OUTBOX.c.payload).where(
        OUTBOX.c.body_id == body_id, OUTBOX.c.openid == MASS_OPENID)))


def _open_rows(session: Session, body_id: int | None) -> bool:
    return session.scalar(select(OUTBOX.c.id).where(OUTBOX.c.body_id == body_id, OUTBOX.c.status.in_(OPEN))
                          .limit(1)) is not None


_WITH_REPORTS = OUTBOX.outerjoin(MASS_REPORTS, MASS_REPORTS.c.msg_id == OUTBOX.c.msg_id)


def _awaiting_reports(session: Session, body_id: int | None, now: datetime) -> bool:
    """A mass chunk sent but not yet reported by MASSSENDJOBFINISH (given up after a while)."""
    return session.scalar(select(OUTBOX.c.id).select_from(_WITH_REPORTS).where(
        OUTBOX.c.body_id == body_id, OUTBOX.c.openid == MASS_OPENID, OUTBOX.c.status == OutboxStatus.SENT,
        MASS_REPORTS.c.id.is_(None), OUTBOX.c.sent_at > now - MASS_REPORT_WAIT).limit(1)) is not None


@dataclass(frozen=True)
class Progress:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0


def progress(session: Session, c: Campaign) -> Progress:
    """Counted from the campaign's outbox rows: true while it runs. A mass chunk counts by the
    MASSSENDJOBFINISH event WeChat sends back (until then its openids are pending). Once its rows
    are pruned, the counts it kept (keep_final_counts)."""
    if c.final_counts is not None:
        return Progress(**c.final_counts)
    counts = dict(session.execute(select(OUTBOX.c.status, func.count()).where(
        OUTBOX.c.body_id == c.body_id, OUTBOX.c.openid != MASS_OPENID).group_by(OUTBOX.c.status)).all())
    sent = counts.get(OutboxStatus.SENT, 0)
    failed = counts.get(OutboxStatus.FAILED, 0)
    pending = counts.get(OutboxStatus.PENDING, 0) + counts.get(OutboxStatus.SENDING, 0)
    skipped = 0
    if c.channel == "mass":
        r = MASS_REPORTS.c
        for status, payload, reported, total, kept, n_sent, errors in session.execute(
                select(OUTBOX.c.status, OUTBOX.c.payload, r.id, r.total, r.kept, r.sent, r.errors)
                .select_from(_WITH_REPORTS).where(OUTBOX.c.body_id == c.body_id, OUTBOX.c.openid == MASS_OPENID)):
            size = len(payload.get("mass", ()))
            if status == OutboxStatus.FAILED:
                failed += size
            elif reported is not None:
                sent, failed, skipped = sent + n_sent, failed + errors, skipped + max(total - kept, 0)
            else:
                pending += size
    return Progress(sent, failed, skipped, pending)


def keep_final_counts(session: Session, finished_before: datetime) -> int:
    """Up to FINAL_COUNTS_CHUNK campaigns done before `finished_before` keep their counts, so that
    their outbox rows may be pruned (domain.outbox_rows.prune leaves the rows of a campaign without
    them); how many."""
    done = session.scalars(select(Campaign).where(
        Campaign.status == CampaignStatus.DONE, Campaign.finished_at < finished_before,
        Campaign.final_counts.is_(None)).order_by(Campaign.id).limit(FINAL_COUNTS_CHUNK)).all()
    for c in done:
        p = progress(session, c)
        c.final_counts = {"sent": p.sent, "failed": p.failed, "skipped": p.skipped, "pending": p.pending}
    return len(done)


def keep_mass_report(session: Session, msg_id: int, counts: dict[str, int], status: str,
                     fields: dict[str, str], now: datetime) -> bool:
    """Keep a MASSSENDJOBFINISH event (counts: total, kept, sent, errors), whether or not a send is
    recorded under its msg_id yet; the first report of a msg_id stands, a repeat changes nothing.
    Whether a mass send already carries that msg_id."""
    session.execute(dialect_insert(session, MASS_REPORTS).values(
        msg_id=msg_id, status=status[:64], fields=fields, received_at=now, **counts)
        .on_conflict_do_nothing(index_elements=["msg_id"]))
    return session.scalar(select(OUTBOX.c.id).where(OUTBOX.c.msg_id == msg_id, OUTBOX.c.openid == MASS_OPENID)
                          .limit(1)) is not None


def prune_mass_reports(session: Session, received_before: datetime) -> int:
    """Delete a chunk of the reports received before `received_before` that no outbox row names
    (their rows were pruned, or no send of ours ever had that msg_id); how many went."""
    named = select(OUTBOX.c.msg_id).where(OUTBOX.c.msg_id.is_not(None))
    return delete_chunk(session, MASS_REPORTS, MASS_REPORTS.c.received_at < received_before,
                        MASS_REPORTS.c.msg_id.not_in(named))

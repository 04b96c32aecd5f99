"""Mass messages (群发, message/mass/send) in the sandbox: WeChat's checks, the 4-a-month quota of a
服务号 follower, the clientmsgid guard against repeats, and the MASSSENDJOBFINISH event pushed to the
webhook a little later; the news a mass message may carry (media/uploadnews, sent as mpnews). Functions
over a Platform's state (mass_jobs, mass_received, mass_calls; uploaded news in media as type "news")."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from sandbox.platform import MEDIA_TTL, Platform, PlatformError

log = logging.getLogger(__name__)

MIN_OPENIDS, MAX_OPENIDS = 2, 10_000
MAX_CLIENTMSGID_BYTES = 64
CLIENTMSGID_TTL = 24 * 3600
CLIENTMSGID_RETRY_AFTER = 60
CALLS_PER_MINUTE = 60
MONTHLY_QUOTA = 4  # a 服务号 follower receives at most 4 mass messages a calendar month
CHINA = ZoneInfo("Asia/Shanghai")
SENDER = "mphelper"  # FromUserName of the MASSSENDJOBFINISH event
MAX_ARTICLES = 8  # articles in one uploaded news
NEWS = "news"  # the kind an uploaded news has in Platform.media


def month_of(when: float) -> str:
    return datetime.fromtimestamp(when, CHINA).strftime("%Y-%m")


def _check_rate(p: Platform, now: float) -> None:
    """60 calls in any 60 seconds; every call counts, whatever it answers."""
    while p.mass_calls and p.mass_calls[0] <= now - 60:
        p.mass_calls.popleft()
    if len(p.mass_calls) >= CALLS_PER_MINUTE:
        raise PlatformError(45009)
    p.mass_calls.append(now)


def _message(p: Platform, body: dict[str, Any]) -> dict[str, Any]:
    """The timeline item each follower gets, once the body passed WeChat's checks."""
    kind = body.get("msgtype")
    if kind == "text":
        content = (body.get("text") or {}).get("content")
        if not isinstance(content, str) or not content:
            raise PlatformError(47001)
        return {"type": "text", "content": content}
    if kind == "image":
        media_id = (body.get("image") or {}).get("media_id")
        p._media(media_id)
        return {"type": "image", "media_id": media_id}
    if kind == "mpnews":
        media_id = (body.get("mpnews") or {}).get("media_id")
        item = p.media.get(media_id) if isinstance(media_id, str) else None
        if item is None or item[1] != NEWS or p.clock() - item[2] > MEDIA_TTL:
            raise PlatformError(40007)
        return {"type": "mpnews", "media_id": media_id, "articles": json.loads(item[0])}
    raise PlatformError(40008)


def upload_news(p: Platform, body: dict[str, Any]) -> dict[str, Any]:
    """media/uploadnews: 1 to 8 articles, each with a title, HTML content and the thumb_media_id
    of an uploaded image; the news' media_id (valid 3 days, like temporary media)."""
    articles = body.get("articles")
    if not isinstance(articles, list) or not 1 <= len(articles) <= MAX_ARTICLES:
        raise PlatformError(47001)
    for a in articles:
        if not isinstance(a, dict) or not all(isinstance(a.get(k), str) and a[k] for k in ("title", "content")):
            raise PlatformError(47001)
        if len(a["title"]) > 64 or len(str(a.get("digest", ""))) > 120:
            raise PlatformError(47001)
        p._media(a.get("thumb_media_id"))
    media_id = secrets.token_urlsafe(48)
    now = p.clock()
    p.media[media_id] = (json.dumps(articles, ensure_ascii=False).encode(), NEWS, now)
    return {"type": "news", "media_id": media_id, "created_at": int(now)}


def _earlier_job(p: Platform, clientmsgid: str, now: float) -> dict[str, Any] | None:
    return next((job for job in reversed(p.mass_jobs.values())
                 if job["clientmsgid"] == clientmsgid and now - job["created_at"] < CLIENTMSGID_TTL), None)


def send(p: Platform, body: dict[str, Any]) -> dict[str, Any]:
    """Check and run one message/mass/send call; the job record (see Platform.mass_jobs)."""
    now = p.clock()
    _check_rate(p, now)
    touser = body.get("touser")
    if (not isinstance(touser, list) or not MIN_OPENIDS <= len(touser) <= MAX_OPENIDS
            or not all(isinstance(o, str) for o in touser)):
        raise PlatformError(40130)
    item = _message(p, body)
    clientmsgid = body.get("clientmsgid")
    if clientmsgid is not None:
        if not isinstance(clientmsgid, str) or len(clientmsgid.encode()) > MAX_CLIENTMSGID_BYTES:
            raise PlatformError(45067)
        earlier = _earlier_job(p, clientmsgid, now)
        if earlier is not None and now - earlier["created_at"] < CLIENTMSGID_RETRY_AFTER:
            raise PlatformError(45066)
        if earlier is not None:
            raise PlatformError(45065, msg_id=earlier["msg_id"])
    month = month_of(now)
    kept, sent, errors = [], [], []
    for openid in dict.fromkeys(touser):  # an openid listed twice gets the message once
        if p.mass_received.get((openid, month), 0) >= MONTHLY_QUOTA:
            continue  # over the quota: silently left out (not in FilterCount)
        kept.append(openid)
        try:
            user = p._user(openid)
        except PlatformError:
            errors.append(openid)
            continue
        p._show(user, item, via="mass")
        p.mass_received[(openid, month)] = p.mass_received.get((openid, month), 0) + 1
        sent.append(openid)
    msg_id = 1_000_000_001 + len(p.mass_jobs)
    job = {"msg_id": msg_id, "msg_data_id": 2_247_483_001 + len(p.mass_jobs), "clientmsgid": clientmsgid,
           "created_at": now, "message": item, "openids": list(touser), "sent": sent, "errors": errors,
           "total_count": len(touser), "filter_count": len(kept), "sent_count": len(sent),
           "error_count": len(errors)}
    p.mass_jobs[msg_id] = job
    return job


def finish_event(p: Platform, job: dict[str, Any]) -> dict[str, Any]:
    """The MASSSENDJOBFINISH event's fields."""
    failed = job["sent_count"] == 0 and job["error_count"] > 0
    return {"ToUserName": p.account, "FromUserName": SENDER, "CreateTime": str(int(p.clock())),
            "MsgType": "event", "Event": "MASSSENDJOBFINISH", "MsgID": str(job["msg_id"]),
            "Status": "send fail" if failed else "send success", "TotalCount": str(job["total_count"]),
            "FilterCount": str(job["filter_count"]), "SentCount": str(job["sent_count"]),
            "ErrorCount": str(job["error_count"])}


async def push_finish(p: Platform, http: aiohttp.ClientSession, job: dict[str, Any]) -> None:
    """After p.mass_finish_delay seconds, tell the webhook how the job went (as WeChat does, later)."""
    await asyncio.sleep(p.mass_finish_delay)
    if not p.webhook_url:
        return
    try:
        if await p.post(http, finish_event(p, job)) is None:
            log.warning("MASSSENDJOBFINISH %s: the webhook did not answer", job["msg_id"])
    except RuntimeError as e:
        log.warning("MASSSENDJOBFINISH %s: %s", job["msg_id"], e)

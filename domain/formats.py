"""Money, time and names as people read and type them: ¥1,234.56, China time, masked names."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from domain.refusals import Refusal

CHINA = ZoneInfo("Asia/Shanghai")
CHINA_OFFSET = timezone(timedelta(hours=8))


def mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "*" * len(phone)


def mask_name(name: str) -> str:
    """张三 → 张*, 欧阳娜娜 → 欧***: enough to recognise a colleague, not to identify a stranger."""
    return name[:1] + "*" * max(len(name) - 1, 1)


def yuan(fen: int) -> str:
    """Money for people: ¥1,234.56 (and -¥12.30). Integer arithmetic only."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def signed_yuan(fen: int) -> str:
    """A ledger amount with its sign: +¥12.50, -¥3.00 (and ¥0.00)."""
    return ("+" if fen > 0 else "") + yuan(fen)


def plain_yuan(fen: int) -> str:
    """Money for spreadsheets: 1234.56 (and -12.30), yuan without the sign or separators."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def china_time(dt: datetime) -> str:
    """RFC 3339 in China time, to the second: 2026-11-25T10:00:00+08:00. Always +08:00: the zone
    database gives far-off dates a local mean time (+08:05:43) that RFC 3339 cannot write."""
    return dt.astimezone(CHINA_OFFSET).replace(microsecond=0).isoformat()


def china_day(at: datetime) -> date:
    """The China-time day of an instant: the day every daily figure counts it on."""
    return at.astimezone(CHINA).date()


# The calendar's first and last days have no instant on the other side of UTC: a China-time day
# is read within these two (nothing happened before the first or will after the last anyway).
FIRST_DAY, LAST_DAY = date.min + timedelta(days=1), date.max - timedelta(days=1)


def storable(at: datetime) -> bool:
    """Whether an aware instant has a UTC time (what is stored): 0001-01-01T00:00+08:00 has none."""
    try:
        at.astimezone(timezone.utc)
    except OverflowError:
        return False
    return True


def _midnight(day: date, days_on: int = 0) -> datetime:
    return datetime.combine(min(max(day, FIRST_DAY), LAST_DAY) + timedelta(days=days_on), time(), CHINA)


def day_from(day: date) -> datetime:
    """The instant a China-time day begins (aware)."""
    return _midnight(day)


def day_after(day: date) -> datetime:
    """The instant a China-time day ends: the next day's midnight, so that [day_from(a), day_after(b))
    spans days a–b, both included."""
    return _midnight(day, 1)


def day_bounds(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """China-time days `since`–`until`, both included, as the instants [start, end) they span; an
    open side is None."""
    return day_from(since) if since else None, day_after(until) if until else None


def day_start(now: datetime) -> datetime:
    """Midnight of `now`'s day in China time (aware)."""
    local = now.astimezone(CHINA)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def week_start(now: datetime) -> datetime:
    """Monday 00:00 of `now`'s week in China time (aware)."""
    today = day_start(now)
    return today - timedelta(days=today.weekday())


def month_start(now: datetime) -> datetime:
    return month_of(now).start


# ---- months ------------------------------------------------------------------------------------
MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Month:
    """A calendar month in China time: [start, end) as aware datetimes."""

    year: int
    month: int

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def key(self) -> int:
        """YYYYMM, as domain.distributor_totals counts months (ALL_TIME is 0)."""
        return self.year * 100 + self.month

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=CHINA)

    @property
    def end(self) -> datetime:
        return self.following.start

    @property
    def following(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    @property
    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)


def month_of(at: datetime) -> Month:
    local = at.astimezone(CHINA)
    return Month(local.year, local.month)


def parse_month(text: str) -> Month | None:
    """'2026-11' as a Month; None for anything else (a month 13, a day, spaces)."""
    m = MONTH_RE.match(text)
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 2000:
        return None
    return Month(int(m.group(1)), int(m.group(2)))


# ---- money typed by people ---------------------------------------------------------------------
# Whole yuan are plain digits or groups of three after a comma (1,234,567): a comma anywhere else
# (12,5 / 1,2345 / ,123 / 1,,234) is not a thousands separator, and guessing what it is would turn
# 12,5 into ¥125.00 for one reader and ¥12.50 for another. NFKC makes the full-width ，a comma.
_AMOUNT = re.compile(r"^([+-]?)(\d+|[1-9]\d{0,2}(?:,\d{3})+)(?:\.(\d*))?$", re.ASCII)
HOW_TO_TYPE = "单位是元，最多两位小数，逗号只用作千位分隔符"
_BAD_FORMAT = f"金额格式不对，请按“提现 金额”发送（{HOW_TO_TYPE}），例如：提现 12.50 或 提现 1,234.50"


class AmountError(Refusal):
    """Why a typed amount is not usable, as a Chinese sentence for the user (`str(e)` is the
    sentence; a refusal `invalid_amount`, 422). Its own class: a form that reads amounts among
    other fields catches it to say which field."""

    def __init__(self, sentence: str):
        super().__init__("invalid_amount", sentence=sentence)


def _typed_amount(text: str) -> tuple[str, str, str] | None:
    """(sign, whole digits without separators, decimals) of a typed amount, or None."""
    t = unicodedata.normalize("NFKC", text).strip().replace("−", "-")
    sign = t[:1] if t[:1] in "+-" else ""
    t = t.removeprefix(sign).strip().removeprefix("¥").removeprefix("￥").removesuffix("元").strip()
    m = _AMOUNT.match(sign + t)
    return None if m is None else (m.group(1), m.group(2).replace(",", ""), m.group(3) or "")


def _fen(whole: str, decimals: str) -> int:
    return int(whole) * 100 + int(decimals.ljust(2, "0"))


def parse_yuan(text: str) -> int:
    """'12.50', '12.5', '12', '¥1,234.56', '１２.５元', '1，234' → fen; no float anywhere.

    Raises AmountError for anything else, including a comma that does not group three digits,
    more than two decimals and amounts ≤ 0."""
    typed = _typed_amount(text)
    if typed is None:
        raise AmountError(_BAD_FORMAT)
    sign, whole, decimals = typed
    if len(decimals) > 2:
        raise AmountError("金额最多两位小数（精确到分），例如：提现 12.50")
    if len(whole) > 10:
        raise AmountError("金额太大了，请核对后重新发送。")
    fen = _fen(whole, decimals)
    if sign == "-" or fen == 0:
        raise AmountError("提现金额需大于 0，例如：提现 12.50")
    return fen


def parse_signed_yuan(text: str) -> int:
    """An amount in yuan that may be negative ('5', '-3.20', '+¥1,234.56') → signed fen; zero is
    returned as 0 (the caller says why it will not do). AmountError for anything else."""
    typed = _typed_amount(text)
    if typed is None or len(typed[2]) > 2 or len(typed[1]) > 10:
        raise AmountError(f"金额格式不对：{HOW_TO_TYPE}，例如 5.00、-3.20 或 1,234.50。")
    sign, whole, decimals = typed
    return -_fen(whole, decimals) if sign == "-" else _fen(whole, decimals)

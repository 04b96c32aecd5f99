"""Money, time and names as people read and type them: ¥1,234.56, China time, masked names."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

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


def plain_yuan(fen: int) -> str:
    """Money for spreadsheets: 1234.56 (and -12.30), yuan without the sign or separators."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def china_time(dt: datetime) -> str:
    """RFC 3339 in China time, to the second: 2026-11-25T10:00:00+08:00. Always +08:00: the zone
    database gives far-off dates a local mean time (+08:05:43) that RFC 3339 cannot write."""
    return dt.astimezone(CHINA_OFFSET).replace(microsecond=0).isoformat()


def day_start(now: datetime) -> datetime:
    """Midnight of `now`'s day in China time (aware)."""
    local = now.astimezone(CHINA)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


# ---- money typed by people ---------------------------------------------------------------------
_AMOUNT = re.compile(r"^([+-]?)(\d+)(?:\.(\d*))?$")


class AmountError(ValueError):
    """Why a typed amount is not usable, as a Chinese sentence for the user."""


def _typed_amount(text: str) -> re.Match[str] | None:
    t = unicodedata.normalize("NFKC", text).strip().replace("−", "-")
    sign = t[:1] if t[:1] in "+-" else ""
    t = t.removeprefix(sign).strip().removeprefix("¥").removeprefix("￥").removesuffix("元").strip().replace(",", "")
    return _AMOUNT.match(sign + t)


def _fen(m: re.Match[str]) -> int:
    return int(m.group(2)) * 100 + int((m.group(3) or "").ljust(2, "0"))


def parse_yuan(text: str) -> int:
    """'12.50', '12.5', '12', '¥1,234.56', '１２.５元' → fen; no float anywhere.

    Raises AmountError for anything else, including more than two decimals and amounts ≤ 0."""
    m = _typed_amount(text)
    if m is None:
        raise AmountError("金额格式不对，请按“提现 金额”发送，单位是元，例如：提现 12.50")
    if len(m.group(3) or "") > 2:
        raise AmountError("金额最多两位小数（精确到分），例如：提现 12.50")
    if len(m.group(2)) > 10:
        raise AmountError("金额太大了，请核对后重新发送。")
    fen = _fen(m)
    if m.group(1) == "-" or fen == 0:
        raise AmountError("提现金额需大于 0，例如：提现 12.50")
    return fen


def parse_signed_yuan(text: str) -> int:
    """An amount in yuan that may be negative ('5', '-3.20', '+¥1,234.56') → signed fen; zero is
    returned as 0 (the caller says why it will not do). AmountError for anything else."""
    m = _typed_amount(text)
    if m is None or len(m.group(3) or "") > 2 or len(m.group(2)) > 10:
        raise AmountError("金额格式不对：单位是元，最多两位小数，例如 5.00 或 -3.20。")
    return -_fen(m) if m.group(1) == "-" else _fen(m)

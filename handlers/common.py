"""Small pure helpers shared by the feature modules: masking, money and time formatting."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")


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


def china_time(dt: datetime) -> str:
    """ISO 8601 in China time, to the second: 2026-11-25T10:00:00+08:00."""
    return dt.astimezone(CHINA).replace(microsecond=0).isoformat()

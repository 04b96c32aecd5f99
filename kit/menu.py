"""The official-account menu: one MenuKey enum for routing and for `distbot menu push`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class MenuKey(StrEnum):
    REGISTER = "REGISTER"
    POSTER = "POSTER"
    SCRIPTS = "SCRIPTS"
    ORDERS = "ORDERS"
    EARNINGS = "EARNINGS"
    WITHDRAW = "WITHDRAW"
    TEAM = "TEAM"
    RANK = "RANK"
    TOP = "TOP"
    TRAINING = "TRAINING"
    HELP = "HELP"


# (top button name, [(sub-button name, key), ...]) — WeChat allows 3 top buttons, 5 subs each.
MENU: tuple[tuple[str, tuple[tuple[str, MenuKey], ...]], ...] = (
    ("推广", (("我的海报", MenuKey.POSTER), ("推广话术", MenuKey.SCRIPTS), ("培训资料", MenuKey.TRAINING),
              ("本月排行", MenuKey.TOP))),
    ("收益", (("我的收益", MenuKey.EARNINGS), ("提现", MenuKey.WITHDRAW), ("我的订单", MenuKey.ORDERS),
              ("我的团队", MenuKey.TEAM), ("我的等级", MenuKey.RANK))),
    ("我的", (("注册分销员", MenuKey.REGISTER), ("帮助客服", MenuKey.HELP))),
)


def menu_payload() -> dict[str, Any]:
    """The body of WeChat's menu/create call."""
    return {
        "button": [
            {"name": top, "sub_button": [{"type": "click", "name": name, "key": key.value} for name, key in subs]}
            for top, subs in MENU
        ]
    }

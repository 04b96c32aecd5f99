"""Commands whose features are still being built: they say so plainly instead of pretending.

Each feature module takes its commands from here when it lands.
"""

from __future__ import annotations

from bot.chat import Ctx, Incoming
from bot.feature import Feature
from bot.menu import MenuKey
from domain.messages import Text

feature = Feature("upcoming")

_UPCOMING: tuple[tuple[str, str, MenuKey | None], ...] = (
    ("等级", "rank", MenuKey.RANK),
    ("排行", "top", MenuKey.TOP),
)


def on_upcoming(msg: Incoming, ctx: Ctx) -> Text:
    return Text("这个功能正在开发中，即将上线，敬请期待。回复“帮助”查看现在可用的功能。")


for _zh, _en, _key in _UPCOMING:
    feature.command(_zh, _en, menu=_key)(on_upcoming)

"""Reading the console's contest forms (创建 and 修改): prizes typed in yuan, times in China time.
Each problem is a Refusal (invalid_contest) with the sentence the admin reads."""

from __future__ import annotations

import re
from datetime import datetime

from domain.formats import CHINA, AmountError, parse_yuan, plain_yuan
from domain.refusals import Refusal

FIELD_NAMES = {"title": "标题", "metric": "指标", "skus": "商品编号", "starts_at": "开始时间", "ends_at": "结束时间",
               "prizes_fen": "奖金（元）", "audience": "受众"}
_LIST_SEPARATORS = re.compile(r"[,，、\s]+")
# In a list of prizes a comma separates, so "1,500" would be two prizes, ¥1 and ¥500: a comma
# between a digit and exactly three more reads both ways and is refused rather than guessed.
_GROUPED = re.compile(r"[\d.,，]*\d[,，]\d{3}(?!\d)[\d.,，]*")


def problem(sentence: str) -> Refusal:
    """What is wrong with a contest form, as a Chinese sentence."""
    return Refusal("invalid_contest", sentence=sentence)


def split(value: str) -> list[str]:
    return [v for v in _LIST_SEPARATORS.split(value) if v]


def china_moment(value: str, field: str) -> datetime:
    """A datetime-local value (2026-12-01T00:00) read as China time."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise problem(f"请填写{FIELD_NAMES[field]}（年-月-日 时:分，北京时间）。") from None
    return moment.replace(tzinfo=CHINA) if moment.tzinfo is None else moment


def prizes(typed: str) -> list[int]:
    """Prizes by place in fen from "300, 200, 100" (yuan)."""
    if (grouped := _GROUPED.search(typed)) is not None:
        raise problem(f"奖金里的“{grouped.group().strip(',，')}”有两种读法：多个奖金请用“, ”（逗号加空格）、顿号或空格分隔，"
                      "金额不写千位逗号，例如 1500, 800, 300。")
    found = []
    for amount in split(typed):
        try:
            found.append(parse_yuan(amount))
        except AmountError:
            raise problem(f"奖金“{amount}”不是有效的金额：单位是元，大于 0，最多两位小数，多个用逗号分隔。") from None
    return found


def local_input(at: datetime) -> str:
    """A moment as a datetime-local field's value, China time."""
    return f"{at.astimezone(CHINA):%Y-%m-%dT%H:%M}"


def yuan_list(prizes_fen: list[int]) -> str:
    """Prizes as typed in the form: 300.00, 100.50."""
    return ", ".join(plain_yuan(p) for p in prizes_fen)

"""Programme settings changed at runtime (CONTRACT §10): the `[distribution]` keys and each rank's
name, rates and promotion requirements, edited by an admin (PATCH /api/settings, the console's
分销设置) and kept in the database as a history of changes (`settings_changes`: who, why, when,
the values set). config.toml gives the first values; the latest value of each key wins.

A key is dotted: "distribution.freeze_days", "ranks.gold.rates". A change is checked against the
effective settings as they stand in its own transaction (PostgreSQL: one change at a time), with
the law first: at most three levels, rates within 0-1 and no longer than the levels. What a
change sets applies from then on, never to what was booked: a commission keeps its stored rate,
a withdrawal its amount, a promotion stays (ranks only go up).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from domain.config import Config
from domain.config_sections import LEGAL_MAX_LEVELS, DistributionConfig, RankConfig
from domain.formats import yuan
from domain.refusals import Refusal
from storage.db import is_postgres
from storage.tables import SETTINGS_CHANGES

log = logging.getLogger(__name__)

DISTRIBUTION = "distribution"
RANKS = "ranks"
RANK_FIELDS = ("name", "rates", "min_sales_fen", "min_team_size")
MAX_REASON = 200
MAX_NAME = 32
MAX_RATE_DIGITS = 12  # "0.1234567890": more is no rate anyone means
# What people read for each field (the console's labels, the refusals' sentences).
LABELS = {"max_levels": "分销层级", "freeze_days": "冻结天数", "min_withdraw_fen": "单笔最低提现",
          "monthly_cap_fen": "每月佣金上限", "self_purchase": "自购返佣", "name": "名称", "rates": "佣金比例",
          "min_sales_fen": "升级所需销售额", "min_team_size": "升级所需团队人数"}
# Bounds of the integer fields (inclusive): beyond them a value is a typo, or overflows a date.
BOUNDS = {"max_levels": (1, LEGAL_MAX_LEVELS), "freeze_days": (0, 365), "min_withdraw_fen": (1, 10**10),
          "monthly_cap_fen": (0, 10**12), "min_sales_fen": (0, 10**13), "min_team_size": (0, 10**6)}
LAW = f"法律规定最多三级分销（分销层级不能超过 {LEGAL_MAX_LEVELS}）。"
_LOCK = 0x5E771265  # PostgreSQL advisory lock of a change: two changes never check against the same state


@dataclass(frozen=True)
class Change:
    """One row of the history."""

    id: int
    at: datetime
    by: str
    reason: str
    values: dict[str, Any]


def rank_key(rank: str, field: str) -> str:
    return f"{RANKS}.{rank}.{field}"


def keys_of(config: Config) -> list[str]:
    """Every key a change may set, in the order pages show them."""
    return [f"{DISTRIBUTION}.{f}" for f in DistributionConfig.model_fields] + [
        rank_key(r.key, f) for r in config.ranks for f in RANK_FIELDS]


def value_of(config: Config, key: str) -> Any:
    """A key's value in `config`, as JSON stores it (rates as decimal strings)."""
    section, _, rest = key.partition(".")
    if section == DISTRIBUTION:
        return getattr(config.distribution, rest)
    rank, _, field = rest.rpartition(".")
    value = getattr(next(r for r in config.ranks if r.key == rank), field)
    return [str(r) for r in value] if field == "rates" else value


# ---- applying ------------------------------------------------------------------------------------
def latest(changes: Iterable[Change]) -> dict[str, tuple[Any, Change]]:
    """Each key's latest value and the change that set it (changes in id order)."""
    found: dict[str, tuple[Any, Change]] = {}
    for c in changes:
        found.update((k, (v, c)) for k, v in c.values.items())
    return found


def effective(base: Config, values: Mapping[str, Any]) -> Config:
    """`base` with `values` applied (keys of ranks that `base` no longer has are left out),
    validated by the configuration's own sections. ValidationError when a value does not hold."""
    known = set(keys_of(base))
    dist = {k.split(".", 1)[1]: v for k, v in values.items() if k in known and k.startswith(DISTRIBUTION + ".")}
    ranks = []
    for r in base.ranks:
        fields = {f: values[rank_key(r.key, f)] for f in RANK_FIELDS if rank_key(r.key, f) in values}
        ranks.append(RankConfig.model_validate({**r.model_dump(), **fields}) if fields else r)
    distribution = DistributionConfig.model_validate({**base.distribution.model_dump(), **dist})
    return base.model_copy(update={"distribution": distribution, "ranks": tuple(ranks)})


def applied(base: Config, changes: Iterable[Change]) -> Config:
    """The effective settings after `changes`; a stored value that no longer holds against
    config.toml (edited since) is left out, and the log says which."""
    values = {k: v for k, (v, _) in latest(changes).items()}
    try:
        return effective(base, values)
    except ValidationError:
        good: dict[str, Any] = {}
        for key, value in values.items():
            try:
                effective(base, {**good, key: value})
                good[key] = value
            except ValidationError:
                log.error("settings: the stored %s = %r does not hold with config.toml; config.toml's value is used",
                          key, value)
        return effective(base, good)


# ---- checking a change ---------------------------------------------------------------------------
def _refuse(problems: list[tuple[str, str]]) -> Refusal:
    """The refusal of a change: the first problem's sentence; every problem in the details."""
    return Refusal("invalid_settings", "The settings change is refused: " + "; ".join(k for k, _ in problems) + ".",
                   sentence=problems[0][1], details=[{"field": k, "problem": s} for k, s in problems])


def _rates(key: str, raw: Any, problems: list[tuple[str, str]]) -> list[str] | None:
    """Rates as decimal strings ("0.10"), each at least 0 and below 1; None after a problem."""
    if not isinstance(raw, (list, tuple)) or not raw:
        problems.append((key, "佣金比例至少要有一级，例如 0.10。"))
        return None
    if len(raw) > LEGAL_MAX_LEVELS:
        problems.append((key, f"佣金比例最多 {LEGAL_MAX_LEVELS} 级：{LAW}"))
        return None
    rates = []
    for r in raw:
        try:
            d = Decimal(str(r).strip()) if len(str(r).strip()) <= MAX_RATE_DIGITS else None
        except InvalidOperation:
            d = None
        if d is None or not d.is_finite():
            problems.append((key, f"佣金比例“{str(r)[:MAX_RATE_DIGITS]}”不是小数，请写成 0.10 这样的形式。"))
            return None
        if not Decimal(0) <= d < Decimal(1):
            problems.append((key, f"佣金比例必须在 0 到 1 之间（不含 1），“{d}”不行。"))
            return None
        rates.append(str(d))
    return rates


def _value(key: str, raw: Any, problems: list[tuple[str, str]]) -> Any:
    """One value of a change, checked on its own; None after a problem."""
    field = key.rsplit(".", 1)[1]
    label = LABELS[field]
    if field == "rates":
        return _rates(key, raw, problems)
    if field == "name":
        name = " ".join(str(raw).split()) if isinstance(raw, str) else ""
        if not name or len(name) > MAX_NAME:
            problems.append((key, f"等级名称不能为空，最多 {MAX_NAME} 个字。"))
            return None
        return name
    if field == "self_purchase":
        if not isinstance(raw, bool):
            problems.append((key, f"{label}只能是开或关。"))
        return raw if isinstance(raw, bool) else None
    low, high = BOUNDS[field]
    if field == "max_levels" and isinstance(raw, int) and raw > high:
        problems.append((key, LAW))
    elif isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        problems.append((key, f"{label}必须是 {low} 到 {high} 之间的整数。"))
    else:
        return raw
    return None


def checked(base: Config, current: Mapping[str, Any], patch: Mapping[str, Any], reason: str,
            named: Iterable[str] = ()) -> Config:
    """The effective settings once `patch` (dotted keys) is applied over `current` (the stored
    overrides); a Refusal (422) naming every problem when the law or a bound does not hold.
    `named`: the rank keys the request named (a rank named without a value is unknown too)."""
    problems: list[tuple[str, str]] = []
    if not reason.strip():
        problems.append(("reason", "请填写修改原因（会记录在设置的历史中）。"))
    if len(reason) > MAX_REASON:
        problems.append(("reason", f"原因最多 {MAX_REASON} 个字。"))
    known, ranks = set(keys_of(base)), {r.key for r in base.ranks}
    values: dict[str, Any] = {}
    patch = {**{rank_key(r, "name"): None for r in named if r not in ranks}, **patch}
    for key, raw in patch.items():
        if key not in known:
            rank = key.removeprefix(RANKS + ".").rpartition(".")[0]
            problems.append((key, f"没有这个等级：{rank[:32]}（现有：{'、'.join(sorted(ranks))}）。"
                             if key.startswith(RANKS + ".") and rank not in ranks else f"没有这项设置：{key[:64]}。"))
            continue
        values[key] = _value(key, raw, problems)
    if not patch:
        problems.append(("settings", "没有要修改的设置。"))
    if problems:
        raise _refuse(problems)
    try:
        new = effective(base, {**current, **values})
    except ValidationError as e:  # what the sections check beyond the rules above
        raise _refuse([(".".join(map(str, err["loc"])), "设置不符合要求：" + err["msg"]) for err in e.errors()]) from None
    levels = new.distribution.max_levels
    touched = f"{DISTRIBUTION}.max_levels" in values
    for r in new.ranks:
        if len(r.rates) > levels and (touched or rank_key(r.key, "rates") in values):
            problems.append((rank_key(r.key, "rates"), f"等级“{r.name}”的佣金比例有 {len(r.rates)} 级，"
                             f"超过了分销层级（{levels} 级）。"))
    if problems:
        raise _refuse(problems)
    return new


# ---- the history in the database -----------------------------------------------------------------
def last_change_id(session: Session) -> int:
    """The id of the latest change (0: none): what every process polls."""
    return session.scalar(select(func.max(SETTINGS_CHANGES.c.id))) or 0


def load_changes(session: Session) -> list[Change]:
    """The whole history, oldest first (a few rows a month)."""
    return [Change(r.id, r.at, r.by, r.reason, dict(r.values))
            for r in session.execute(select(SETTINGS_CHANGES).order_by(SETTINGS_CHANGES.c.id))]


@dataclass(frozen=True)
class Changed:
    """What a change did: the settings before and after it, and the history with it."""

    before: Config
    after: Config
    history: list[Change]

    @property
    def summary(self) -> str:
        """The change in a line (the audit's summary): 冻结天数 7→3；黄金合伙人 佣金比例 0.15/0.05→0.2/0.05."""
        return describe(self.before, self.after, self.history[-1].values)


def change(session: Session, base: Config, patch: Mapping[str, Any], reason: str, by: str, now: datetime,
           named: Iterable[str] = ()) -> Changed:
    """Check `patch` against the stored history and record it. A Refusal (nothing written) when
    it does not hold."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
    history = load_changes(session)
    current = {k: v for k, (v, _) in latest(history).items()}
    new = checked(base, current, patch, reason, named)
    values = {k: value_of(new, k) for k in patch}
    row = session.execute(SETTINGS_CHANGES.insert().values(at=now, by=by[:64], reason=reason.strip(),
                                                           values=values)).inserted_primary_key[0]
    return Changed(applied(base, history), new, [*history, Change(row, now, by[:64], reason.strip(), values)])


# ---- what pages and /api show --------------------------------------------------------------------
def settings_json(config: Config, base: Config, changes: Iterable[Change]) -> dict[str, Any]:
    """GET /api/settings: the effective settings and what the database overrides of config.toml."""
    found, at = latest(changes), {k: i for i, k in enumerate(keys_of(base))}
    overrides = [{"key": k, "value": value_of(config, k), "config": value_of(base, k), "by": c.by,
                  "reason": c.reason, "at": c.at.isoformat()}
                 for k, (_, c) in sorted(found.items(), key=lambda kv: at.get(kv[0], len(at))) if k in at]
    return {
        DISTRIBUTION: config.distribution.model_dump(),
        RANKS: [{"key": r.key, "name": r.name, "rates": [str(x) for x in r.rates], "min_sales_fen": r.min_sales_fen,
                 "min_team_size": r.min_team_size} for r in config.ranks],
        "overrides": overrides,
    }


def label(config: Config, key: str) -> str:
    """A key as people read it: 冻结天数, 黄金合伙人 佣金比例."""
    section, _, rest = key.partition(".")
    if section == DISTRIBUTION:
        return LABELS.get(rest, rest)
    rank, _, field = rest.rpartition(".")
    name = next((r.name for r in config.ranks if r.key == rank), rank)
    return f"{name} {LABELS.get(field, field)}"


def shown(key: str, value: Any) -> str:
    """A value as people read it: money as ¥1,234.56, rates as 0.15/0.05, 开/关."""
    field = key.rsplit(".", 1)[1]
    if isinstance(value, bool):
        return "开" if value else "关"
    if field.endswith("_fen") and isinstance(value, int):
        return yuan(value)
    if isinstance(value, (list, tuple)):
        return "/".join(map(str, value))
    return str(value)


def describe(before: Config, after: Config, keys: Iterable[str]) -> str:
    """What changed, in a line: 冻结天数 7→3；黄金合伙人 佣金比例 0.15/0.05→0.2/0.05."""
    return "；".join(f"{label(after, k)} {shown(k, value_of(before, k))}→{shown(k, value_of(after, k))}"
                    for k in keys if k in set(keys_of(after)))

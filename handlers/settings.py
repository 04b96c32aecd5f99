"""分销设置 (CONTRACT §10): the programme settings an admin changes at runtime, GET/PATCH
/api/settings and the console's page; the rules and the history are domain.settings', the
settings in force in every process kit.live_settings'. A change applies at once in this process and
within seconds in the others, to what happens from then on (a booked commission keeps its rate)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from kit.api import ApiModel, actor_of, ok, text
from kit.auditing import note
from kit.console import done, page, returns_to
from kit.feature import Feature
from kit.app_keys import CLOCK, WRITER
from kit.live_settings import SETTINGS, LiveSettings
from domain import settings as rules
from domain.config import Config
from domain.config_sections import LEGAL_MAX_LEVELS
from domain.formats import AmountError, parse_signed_yuan, plain_yuan
from domain.refusals import Refusal

feature = Feature("settings", scope="admin")  # the programme's rules: the admin's alone
api = feature.api
LEVEL_NAMES = ("一级", "二级", "三级")[:LEGAL_MAX_LEVELS]


# ---- /api/settings ---------------------------------------------------------------------------------
class DistributionPatch(ApiModel):
    model_config = ConfigDict(extra="forbid")
    max_levels: int | None = Field(None, description=f"commission levels, at most {LEGAL_MAX_LEVELS} (the law)")
    freeze_days: int | None = Field(None, description="days a completed order's commission stays frozen")
    min_withdraw_fen: int | None = None
    monthly_cap_fen: int | None = Field(None, description="commission one distributor earns a month at most; 0: none")
    self_purchase: bool | None = Field(None, description="whether a distributor earns on their own purchases")


class RankPatch(ApiModel):
    model_config = ConfigDict(extra="forbid")
    key: text(32) = Field(description="a rank key of config.toml")
    name: str | None = Field(None, max_length=64)
    rates: list[str] | None = Field(None, max_length=10, description='per level, decimal strings: ["0.15", "0.05"]')
    min_sales_fen: int | None = None
    min_team_size: int | None = None


class SettingsPatch(ApiModel):
    noun: ClassVar[str] = "settings"
    model_config = ConfigDict(extra="forbid")
    distribution: DistributionPatch | None = None
    ranks: list[RankPatch] = Field(default_factory=list, max_length=50)
    reason: str = Field("", max_length=500, description="why (required: kept in the history)")


class RankOut(BaseModel):
    key: str
    name: str
    rates: list[str]
    min_sales_fen: int
    min_team_size: int


class DistributionOut(BaseModel):
    max_levels: int
    freeze_days: int
    min_withdraw_fen: int
    monthly_cap_fen: int
    self_purchase: bool


class Override(BaseModel):
    key: str = Field(description='dotted: "distribution.freeze_days", "ranks.gold.rates"')
    value: Any = Field(description="the value in force (set in the database)")
    config: Any = Field(description="config.toml's value, which it overrides")
    by: str
    reason: str
    at: str


class SettingsAnswer(BaseModel):
    distribution: DistributionOut
    ranks: list[RankOut]
    overrides: list[Override]


def _answer(live: LiveSettings) -> web.Response:
    return ok(rules.settings_json(live.config, live.base, live.changes))


@api.get("/settings", response=SettingsAnswer,
         summary="The programme settings in force: distribution, ranks, and overrides (each key the database "
                 "sets over config.toml: key, value, config.toml's value, by, reason, at of its latest change)")
async def get_settings(request: web.Request) -> web.Response:
    return _answer(request.config_dict[SETTINGS])


async def _change(request: web.Request, patch: dict[str, Any], reason: str,
                  named: Iterable[str] = ()) -> rules.Changed:
    """Record a change (the API's and the form's) and put it in force in this process at once."""
    live, actor, now = request.config_dict[SETTINGS], actor_of(request), request.config_dict[CLOCK].now()

    def work(session: Session) -> rules.Changed:
        return rules.change(session, live.base, patch, reason, actor, now, named)
    changed = await request.config_dict[WRITER].run(work)
    live.adopt(changed.history)
    note(request, f"分销设置：{changed.summary}"[:200], "settings")
    return changed


@api.patch("/settings", body=SettingsPatch, response=SettingsAnswer, errors=(422,),
           summary="Change programme settings (any distribution key; ranks by key: name, rates, min_sales_fen, "
                   "min_team_size) with a reason; in force in every process within 10 s, for what happens from "
                   "then on. 422 and nothing changes: max_levels > 3, rates longer than max_levels or outside "
                   "0-1, an unknown rank, no reason")
async def patch_settings(request: web.Request, body: SettingsPatch) -> web.Response:
    patch = {f"{rules.DISTRIBUTION}.{k}": v for k, v in
             (body.distribution.model_dump(exclude_none=True) if body.distribution else {}).items()}
    for r in body.ranks:
        patch.update((rules.rank_key(r.key, f), v) for f, v in r.model_dump(exclude_none=True, exclude={"key"}).items())
    await _change(request, patch, body.reason, [r.key for r in body.ranks])
    return _answer(request.config_dict[SETTINGS])


# ---- the console's 分销设置 ----------------------------------------------------------------------------
@feature.console.get("/settings")
async def settings_page(request: web.Request) -> web.Response:
    live = request.config_dict[SETTINGS]
    found = rules.latest(live.changes)
    overrides = [(rules.label(live.config, k), rules.shown(k, rules.value_of(live.config, k)),
                  rules.shown(k, rules.value_of(live.base, k)), c) for k in rules.keys_of(live.base)
                 if (c := found.get(k, (None, None))[1]) is not None]
    history = [(c, "；".join(f"{rules.label(live.config, k)} {rules.shown(k, v)}" for k, v in c.values.items()))
               for c in reversed(live.changes)]
    return page(request, "settings.html", title="分销设置", current="/settings", config=live.config,
                levels=LEVEL_NAMES, overrides=overrides, history=history, plain_yuan=plain_yuan,
                overridden={k for k in found})


def _int(form: Any, name: str, label: str) -> int:
    raw = str(form.get(name, "")).strip()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise Refusal("invalid_settings", f"{name}: not a whole number", sentence=f"{label}请填写整数。")
    return int(raw)


def _fen(form: Any, name: str, label: str) -> int:
    try:
        return parse_signed_yuan(str(form.get(name, "")))
    except AmountError as e:
        raise Refusal("invalid_settings", f"{name}: not an amount", sentence=f"{label}：{e.sentence}") from None


def _form_values(form: Any, config: Config) -> dict[str, Any]:
    """Every value the form shows, read back as the keys' values."""
    d = rules.DISTRIBUTION
    values: dict[str, Any] = {
        f"{d}.max_levels": _int(form, "max_levels", "分销层级"),
        f"{d}.freeze_days": _int(form, "freeze_days", "冻结天数"),
        f"{d}.min_withdraw_fen": _fen(form, "min_withdraw", "单笔最低提现"),
        f"{d}.monthly_cap_fen": _fen(form, "monthly_cap", "每月佣金上限"),
        f"{d}.self_purchase": form.get("self_purchase") == "on",
    }
    for i, r in enumerate(config.ranks):
        rates = [str(form.get(f"rank{i}-rate{n}", "")).strip() for n in range(1, len(LEVEL_NAMES) + 1)]
        while rates and not rates[-1]:
            rates.pop()
        values[rules.rank_key(r.key, "name")] = str(form.get(f"rank{i}-name", ""))
        values[rules.rank_key(r.key, "rates")] = rates
        values[rules.rank_key(r.key, "min_sales_fen")] = _fen(form, f"rank{i}-min_sales", f"{r.name} 升级所需销售额")
        values[rules.rank_key(r.key, "min_team_size")] = _int(form, f"rank{i}-min_team", f"{r.name} 升级所需团队人数")
    return values


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: rates by their numbers (0.1 is 0.10), names without surrounding spaces."""
    if isinstance(a, list) and isinstance(b, list):
        try:
            return [Decimal(x) for x in a] == [Decimal(x) for x in b]
        except InvalidOperation:
            return False
    return (a.strip() == b) if isinstance(a, str) and isinstance(b, str) else a == b


@feature.console.post("/settings")
async def save_settings(request: web.Request) -> web.StreamResponse:
    returns_to(request, "/settings")
    form, config = await request.post(), request.config_dict[SETTINGS].config
    patch = {k: v for k, v in _form_values(form, config).items() if not _same(v, rules.value_of(config, k))}
    if not patch:
        return done(request, "/settings", "没有修改任何设置。")
    changed = await _change(request, patch, str(form.get("reason", "")))
    return done(request, "/settings", f"已保存：{changed.summary}"[:200])

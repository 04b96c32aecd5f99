"""The features, in routing order (a command word is tried feature by feature, in this order).
No auto-discovery: a new feature is one module under handlers/ and one line here."""

from __future__ import annotations

from kit.feature import Feature
from handlers import audit, campaigns, content_packs, contests, distributors, earnings, exports, help_text, leave
from handlers import orders, overview, payouts, posters, ranks, risk
from handlers import registration, scripts, service, settings, staff, team, trainings, weekly_report, withdrawals
from handlers import alerts, backups, campaign_pages, commissions, details, my_stats, stats, team_bonus, team_orders

FEATURES: tuple[Feature, ...] = (
    registration.feature,
    orders.feature,
    earnings.feature,
    team_orders.feature,  # before team: 团队订单 is not 团队 with the argument 订单
    team.feature,
    details.feature,
    weekly_report.feature,
    team_bonus.feature,
    payouts.feature,  # before withdrawals: 提现记录 is not 提现 with the argument 记录
    withdrawals.feature,
    leave.feature,
    posters.feature,
    my_stats.feature,
    scripts.feature,
    trainings.feature,
    content_packs.feature,
    campaigns.feature,
    campaign_pages.feature,
    ranks.feature,
    contests.feature,
    service.feature,
    risk.feature,
    overview.feature,
    distributors.feature,
    exports.feature,
    commissions.feature,
    stats.feature,
    audit.feature,
    settings.feature,
    staff.feature,
    alerts.feature,
    backups.feature,
    help_text.feature,
)

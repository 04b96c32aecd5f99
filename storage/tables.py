"""The tables as SQLAlchemy Core objects, for the statements that several modules build."""

from __future__ import annotations

from sqlalchemy import Table

from storage.models import ConversationState, Distributor, Follower, OutboxMessage, ProcessedMessage, SignedQueryRow
from storage.models_alerts import Alert
from storage.models_campaigns import Campaign, CampaignImage, MassReport
from storage.models_content import ContentPack, LivePack, QrScan
from storage.models_console import AuditEntry, ConsoleSession, DailyTotals, SignInTry, StaffAccount
from storage.models_engage import Adjustment, Contest, ContestScore, RankChange, Ticket, TicketReply
from storage.models_webhooks import WebhookDelivery
from storage.models_risk import RiskFlag, Suspension
from storage.models_sandbox import SandboxMessage, SandboxUser
from storage.models_settings import SettingsChange
from storage.models_ledger import (Balance, Commission, DistributorTotals, InviterChange, LedgerEntry, Order,
                                    OrderEvent, PayoutBill, TeamBonus, Withdrawal)

DISTRIBUTORS: Table = Distributor.__table__  # type: ignore[assignment]
FOLLOWERS: Table = Follower.__table__  # type: ignore[assignment]
STATES: Table = ConversationState.__table__  # type: ignore[assignment]
PROCESSED: Table = ProcessedMessage.__table__  # type: ignore[assignment]
SIGNED_QUERIES: Table = SignedQueryRow.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxMessage.__table__  # type: ignore[assignment]
CAMPAIGNS: Table = Campaign.__table__  # type: ignore[assignment]
MASS_REPORTS: Table = MassReport.__table__  # type: ignore[assignment]
CAMPAIGN_IMAGES: Table = CampaignImage.__table__  # type: ignore[assignment]
ORDERS: Table = Order.__table__  # type: ignore[assignment]
EVENTS: Table = OrderEvent.__table__  # type: ignore[assignment]
COMMISSIONS: Table = Commission.__table__  # type: ignore[assignment]
BALANCES: Table = Balance.__table__  # type: ignore[assignment]
DISTRIBUTOR_TOTALS: Table = DistributorTotals.__table__  # type: ignore[assignment]
ENTRIES: Table = LedgerEntry.__table__  # type: ignore[assignment]
WITHDRAWALS: Table = Withdrawal.__table__  # type: ignore[assignment]
PAYOUT_BILLS: Table = PayoutBill.__table__  # type: ignore[assignment]
RANK_CHANGES: Table = RankChange.__table__  # type: ignore[assignment]
INVITER_CHANGES: Table = InviterChange.__table__  # type: ignore[assignment]
ADJUSTMENTS: Table = Adjustment.__table__  # type: ignore[assignment]
CONTESTS: Table = Contest.__table__  # type: ignore[assignment]
CONTEST_SCORES: Table = ContestScore.__table__  # type: ignore[assignment]
TICKETS: Table = Ticket.__table__  # type: ignore[assignment]
TICKET_REPLIES: Table = TicketReply.__table__  # type: ignore[assignment]
CONSOLE_SESSIONS: Table = ConsoleSession.__table__  # type: ignore[assignment]
STAFF: Table = StaffAccount.__table__  # type: ignore[assignment]
SIGN_IN_TRIES: Table = SignInTry.__table__  # type: ignore[assignment]
DAILY_TOTALS: Table = DailyTotals.__table__  # type: ignore[assignment]
WEBHOOK_DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[assignment]
RISK_FLAGS: Table = RiskFlag.__table__  # type: ignore[assignment]
SUSPENSIONS: Table = Suspension.__table__  # type: ignore[assignment]
AUDIT_ENTRIES: Table = AuditEntry.__table__  # type: ignore[assignment]
QR_SCANS: Table = QrScan.__table__  # type: ignore[assignment]
SETTINGS_CHANGES: Table = SettingsChange.__table__  # type: ignore[assignment]
ALERTS: Table = Alert.__table__  # type: ignore[assignment]
TEAM_BONUSES: Table = TeamBonus.__table__  # type: ignore[assignment]
CONTENT_PACKS: Table = ContentPack.__table__  # type: ignore[assignment]
CONTENT_LIVE: Table = LivePack.__table__  # type: ignore[assignment]
# The sandbox's emulator only (sandbox/sim_store.py).
SANDBOX_USERS: Table = SandboxUser.__table__  # type: ignore[assignment]
SANDBOX_MESSAGES: Table = SandboxMessage.__table__  # type: ignore[assignment]

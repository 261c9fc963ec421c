from lantern_runtime import BrokerSettings
from lantern_runtime.resilience import UpstreamPolicy


class NotifierSettings(BrokerSettings):
    port: int = 8004
    # SQLite file by default; e.g. postgresql+asyncpg://user:pass@host:5432/notifier in production.
    database_url: str = "sqlite+aiosqlite:///notifier.db"
    # Where notifications are POSTed; without it they are only recorded.
    notifier_webhook_url: str | None = None
    webhook_upstream: UpstreamPolicy = UpstreamPolicy(timeout=5.0)

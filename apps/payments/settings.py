from pydantic import Field

from lantern_runtime import BrokerSettings
from lantern_runtime.resilience import UpstreamPolicy


class PaymentsSettings(BrokerSettings):
    port: int = 8002
    # SQLite file by default; e.g. postgresql+asyncpg://user:pass@host:5432/payments in production.
    database_url: str = "sqlite+aiosqlite:///payments.db"
    bank_url: str = "http://localhost:8003"
    bank_upstream: UpstreamPolicy = UpstreamPolicy(timeout=2.0, max_attempts=3, max_elapsed=5.0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)

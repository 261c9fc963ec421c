from typing import Self

from pydantic import Field, model_validator

from lantern_runtime import BrokerSettings
from lantern_runtime.resilience import UpstreamPolicy
from lantern_runtime.storage import RetentionPolicy, check_inbox_window


class PaymentsSettings(BrokerSettings):
    port: int = 8002
    # SQLite file by default; e.g. postgresql+asyncpg://user:pass@host:5432/payments in production.
    database_url: str = "sqlite+aiosqlite:///payments.db"
    bank_url: str = "http://localhost:8003"
    bank_upstream: UpstreamPolicy = UpstreamPolicy(timeout=2.0, max_attempts=3, max_elapsed=5.0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    # How long sent outbox rows and applied message ids are kept (RETENTION__INBOX_SECONDS, …).
    retention: RetentionPolicy = RetentionPolicy()

    @model_validator(mode="after")
    def _inbox_outlasts_redeliveries(self) -> Self:
        check_inbox_window(self.retention, self)
        return self

from typing import Self

from pydantic import Field, model_validator

from lantern_runtime import BrokerSettings
from lantern_runtime.storage import RetentionPolicy, check_inbox_window


class OrdersSettings(BrokerSettings):
    port: int = 8001
    # SQLite file by default; e.g. postgresql+asyncpg://user:pass@host:5432/orders in production.
    database_url: str = "sqlite+aiosqlite:///orders.db"
    # How often the outbox relay looks for events a commit did not hand to it directly.
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    # A pending order whose payment has not settled by then is cancelled.
    payment_deadline_seconds: float = Field(default=120.0, gt=0)
    # How long sent outbox rows and applied message ids are kept (RETENTION__INBOX_SECONDS, …).
    retention: RetentionPolicy = RetentionPolicy()

    @model_validator(mode="after")
    def _inbox_outlasts_redeliveries(self) -> Self:
        check_inbox_window(self.retention, self)
        return self

from pydantic import Field

from lantern_runtime import BrokerSettings


class OrdersSettings(BrokerSettings):
    port: int = 8001
    # SQLite file by default; e.g. postgresql+asyncpg://user:pass@host:5432/orders in production.
    database_url: str = "sqlite+aiosqlite:///orders.db"
    # How often the outbox relay looks for events a commit did not hand to it directly.
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    # A pending order whose payment has not settled by then is cancelled.
    payment_deadline_seconds: float = Field(default=120.0, gt=0)

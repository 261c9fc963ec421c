from pydantic import Field

from lantern_runtime import BrokerSettings


class NotifierSettings(BrokerSettings):
    port: int = 8004
    # Where notifications are POSTed; without it they are only recorded.
    notifier_webhook_url: str | None = None
    webhook_timeout: float = Field(default=5.0, gt=0)

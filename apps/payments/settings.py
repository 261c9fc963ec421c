from pydantic import Field

from lantern_runtime import BrokerSettings


class PaymentsSettings(BrokerSettings):
    port: int = 8002
    bank_url: str = "http://localhost:8003"
    bank_timeout: float = Field(default=5.0, gt=0)

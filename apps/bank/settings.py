from decimal import Decimal

from pydantic import Field

from lantern_runtime import ServiceSettings


class BankSettings(ServiceSettings):
    port: int = 8003
    bank_approval_limit: Decimal = Field(default=Decimal("1000.00"), gt=0)
    # Authorizations kept (the oldest are forgotten first): about an hour at 25 orders/s.
    bank_ledger_size: int = Field(default=100_000, ge=1)
    # Fault injection: added latency per request, and the fraction answered 503.
    bank_latency_ms: int = Field(default=0, ge=0)
    bank_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Latency spikes: this fraction of requests waits BANK_SPIKE_MS instead.
    bank_spike_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    bank_spike_ms: int = Field(default=0, ge=0)

from pydantic import Field

from lantern_runtime import ServiceSettings


class GatewaySettings(ServiceSettings):
    port: int = 8080
    # By service name: http://orders:8001 in Kubernetes, resolved by cluster DNS.
    orders_url: str = "http://localhost:8001"
    upstream_timeout: float = Field(default=10.0, gt=0)

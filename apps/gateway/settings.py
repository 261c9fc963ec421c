from lantern_runtime import ServiceSettings
from lantern_runtime.resilience import UpstreamPolicy


class GatewaySettings(ServiceSettings):
    port: int = 8080
    # By service name: http://orders:8001 in Kubernetes, resolved by cluster DNS.
    orders_url: str = "http://localhost:8001"
    orders_upstream: UpstreamPolicy = UpstreamPolicy(timeout=10.0, max_elapsed=15.0)

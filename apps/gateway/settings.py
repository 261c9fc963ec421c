"""The gateway's settings: PORT, ORDERS_URL, REDIS_URL and the GATEWAY_* edge settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.routes import Route, RouteTable, default_routes, routes_from_file
from lantern_runtime import ServiceSettings
from lantern_runtime.resilience import UpstreamPolicy

MIN_SECRET_LENGTH = 32


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class EdgeSettings(BaseSettings):
    """What the gateway lets in and how: each field reads GATEWAY_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    # Authentication: a JWKS URL (OIDC; RS256/ES256), or a shared HS256 secret for development.
    # With a JWKS URL, issuer and audience are required: a provider signs tokens for every
    # application (and, multi-tenant, for every tenant) with the same keys.
    jwks_url: str | None = None
    jwt_secret: SecretStr | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway: float = Field(default=30.0, ge=0, description="seconds of clock skew allowed for exp/nbf")
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    # An unknown kid refetches the key set, at most once per this many seconds.
    jwks_refresh_cooldown: float = Field(default=5.0, ge=0)
    jwks_timeout: float = Field(default=5.0, gt=0, description="seconds to wait for the key set")
    # Signs X-Lantern-Subject for the services (HMAC-SHA256); without it the header goes unsigned.
    subject_secret: SecretStr | None = None

    # Per client (token subject, or client IP): requests per second; bursts of twice that.
    rate_limit: float = Field(default=20.0, gt=0)
    rate_limit_prefix: str = "lantern:ratelimit:"
    # Seconds to wait for Redis before this replica decides from its own memory buckets.
    redis_timeout: float = Field(default=0.5, gt=0)

    max_body_bytes: int = Field(default=1024 * 1024, ge=0)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_json_depth: int = Field(default=32, ge=1)
    request_timeout: float = Field(default=30.0, gt=0, description="seconds for a whole request")

    routes: list[Route] | None = None
    routes_file: Path | None = None
    # Upstream base URL by service name; a service not listed is http://<service>:<route port>.
    upstreams: dict[str, str] = Field(default_factory=dict)

    trust_client_traceparent: bool = False
    trusted_trace_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    hsts_max_age: int = Field(default=0, ge=0, description="seconds; 0 sends no Strict-Transport-Security")

    _split = field_validator("trusted_trace_cidrs", "cors_origins", mode="before")(_comma_list)

    @field_validator("jwt_secret", "subject_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"must be at least {MIN_SECRET_LENGTH} characters (e.g. `openssl rand -hex 32`), "
                f"got {len(secret.get_secret_value())}"
            )
        return secret

    @model_validator(mode="after")
    def _jwks_names_issuer_and_audience(self) -> EdgeSettings:
        if self.jwks_url:
            missing = [
                name
                for name, value in (
                    ("GATEWAY_JWT_ISSUER", self.jwt_issuer),
                    ("GATEWAY_JWT_AUDIENCE", self.jwt_audience),
                )
                if not (value and value.strip())
            ]
            if missing:
                raise ValueError(
                    f"GATEWAY_JWKS_URL is set, so {' and '.join(missing)} must be set too: the identity "
                    "provider's keys sign tokens for other applications as well, and only the issuer "
                    "(iss) and audience (aud) say a token is meant for this one"
                )
        return self


class GatewaySettings(ServiceSettings):
    port: int = 8080
    # By service name: http://orders:8001 in Kubernetes, resolved by cluster DNS.
    orders_url: str = "http://localhost:8001"
    orders_upstream: UpstreamPolicy = UpstreamPolicy(timeout=10.0, max_elapsed=15.0)
    # Rate-limit buckets live here when set, shared by every gateway replica; in memory otherwise.
    redis_url: str | None = None
    edge: EdgeSettings = Field(default_factory=EdgeSettings)

    def route_table(self) -> RouteTable:
        if self.edge.routes is not None:
            return RouteTable(self.edge.routes)
        if self.edge.routes_file is not None:
            return RouteTable(routes_from_file(self.edge.routes_file))
        return RouteTable(default_routes(self.orders_upstream))

    def upstream_url(self, route: Route) -> str:
        if route.service in self.edge.upstreams:
            return self.edge.upstreams[route.service]
        if route.service == "orders":
            return self.orders_url
        return f"http://{route.service}:{route.port}"

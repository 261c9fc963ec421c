"""The settings every Lantern service shares, read only from environment variables."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Base for each service's Settings; subclasses add their own fields and default port."""

    # Nested settings, such as an upstream policy, read e.g. BANK_UPSTREAM__TIMEOUT=2.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_nested_delimiter="__")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"
    # How long a service drains in-flight work on SIGTERM; the chart's grace period exceeds it.
    shutdown_timeout: float = Field(default=20.0, gt=0)
    # Shared with the gateway by the services that act for a caller (orders): a request's
    # X-Lantern-Subject is trusted only when signed with it, for this method, path and service.
    gateway_subject_secret: str | None = None
    # Seconds a subject signature stays valid: a captured one stops working after that.
    gateway_subject_max_age: float = Field(default=10.0, gt=0, le=300)


class BrokerSettings(ServiceSettings):
    """Settings of a service that talks to RabbitMQ."""

    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    # Seconds start-up waits for the broker and database to answer (retrying with backoff, /readyz
    # 503 meanwhile) before it gives up and the process exits with code 3. Five minutes covers a
    # cluster bringing RabbitMQ and PostgreSQL up beside the services; a wrong URL still ends.
    startup_timeout: float = Field(default=300.0, gt=0)
    # Deliveries a consumer may hold unacknowledged at once.
    prefetch_count: int = Field(default=32, ge=1)
    # Attempts before a failing message is dead-lettered.
    max_delivery_attempts: int = Field(default=5, ge=1)
    retry_base_delay_ms: int = Field(default=200, ge=1)
    retry_max_delay_ms: int = Field(default=10_000, ge=1)
    # Seconds a message handler may run before it counts as failed (and is retried).
    handler_timeout: float = Field(default=30.0, gt=0)
    # Seconds to wait for the broker to confirm a publish before it counts as failed.
    publish_timeout: float = Field(default=5.0, gt=0)
    # The largest message body a publish may carry: the broker's max_message_size (the chart sets
    # both from rabbitmq.maxMessageBytes). A larger one is refused before it is sent.
    broker_max_message_bytes: int = Field(default=1024 * 1024, ge=1)
    # Serve the service's AsyncAPI document at /asyncapi (HTML) and /asyncapi.json: for development.
    asyncapi_docs: bool = Field(
        default=False, validation_alias=AliasChoices("LANTERN_ASYNCAPI_DOCS", "asyncapi_docs")
    )

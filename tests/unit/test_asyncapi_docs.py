"""Each messaging service's AsyncAPI document: the committed one is what `faststream docs gen`
makes now, it carries the channels, bindings and typed payloads, and the service serves it in
development. After changing a handler, an event or a publisher, regenerate:

    for s in orders payments notifier; do
      .venv/bin/faststream docs gen $s.bootstrap:asyncapi --factory --yaml --app-dir apps \\
        --out docs/asyncapi/$s.yaml
    done
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from lantern_runtime.telemetry import Telemetry

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "asyncapi"
SERVICES = ("orders", "payments", "notifier")


def generated(service: str) -> dict[str, Any]:
    bootstrap = importlib.import_module(f"{service}.bootstrap")
    document: dict[str, Any] = yaml.safe_load(bootstrap.asyncapi().schema.to_specification().to_yaml())
    return document


def committed(service: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DOCS / f"{service}.yaml").read_text())
    return document


@pytest.mark.parametrize("service", SERVICES)
def test_the_committed_document_is_the_generated_one(service: str) -> None:
    # Compared as data: FastStream keeps publishers in a WeakSet, so their order in the file
    # may differ from one generation to the next while the document does not.
    assert generated(service) == committed(service), (
        f"docs/asyncapi/{service}.yaml is stale; regenerate it (see this module's docstring)"
    )


@pytest.mark.skipif(
    shutil.which("faststream", path=str(Path(sys.executable).parent)) is None, reason="needs faststream[cli]"
)
def test_faststream_docs_gen_writes_the_committed_document(tmp_path: Path) -> None:
    out = tmp_path / "payments.yaml"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "faststream"),
            "docs",
            "gen",
            "payments.bootstrap:asyncapi",
            "--factory",
            "--yaml",
            "--app-dir",
            str(ROOT / "apps"),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert yaml.safe_load(out.read_text()) == committed("payments")


def test_the_documents_carry_channels_bindings_and_typed_payloads() -> None:
    payments = committed("payments")
    channel = payments["channels"]["payments.order-events"]
    assert channel["bindings"]["amqp"]["queue"]["name"] == "payments.order-events"
    assert "order.created, order.cancelled" in channel["description"]
    authorized = payments["channels"]["payment.authorized"]
    assert authorized["address"] == "payment.authorized"
    assert authorized["bindings"]["amqp"]["exchange"] == {
        "name": "lantern.events",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    schemas = payments["components"]["schemas"]
    assert set(schemas["OrderCreated"]["properties"]) == {"order_id", "customer_id", "total"}
    assert set(schemas["PaymentAuthorized"]["properties"]) == {"order_id", "authorization_id", "amount"}
    subscribed = payments["components"]["messages"]["payments.order-events:SubscribeMessage"]["payload"]
    assert subscribed == {
        "oneOf": [
            {"$ref": "#/components/schemas/OrderCreated"},
            {"$ref": "#/components/schemas/OrderCancelled"},
        ]
    }
    assert {"payment.authorized", "payment.declined", "payments.order-events.dead:DeadLetter"} <= set(
        payments["channels"]
    )
    assert {"order.created", "order.confirmed", "order.cancelled"} <= set(committed("orders")["channels"])
    assert "notifier.order-outcomes" in committed("notifier")["channels"]


def service_app(service: str, **settings: Any) -> Any:
    bootstrap = importlib.import_module(f"{service}.bootstrap")
    settings_class = {
        "orders": "orders.settings:OrdersSettings",
        "payments": "payments.settings:PaymentsSettings",
        "notifier": "notifier.settings:NotifierSettings",
    }[service]
    module, name = settings_class.split(":")
    app, _ = bootstrap.create_app(
        getattr(importlib.import_module(module), name)(**settings), Telemetry(service)
    )
    return app


@pytest.mark.parametrize("service", SERVICES)
def test_the_service_serves_its_document_in_development(service: str) -> None:
    # No lifespan: the routes answer without a broker or database.
    client = TestClient(service_app(service, asyncapi_docs=True))
    served = client.get("/asyncapi.json")
    assert served.status_code == 200
    assert served.json()["channels"].keys() == committed(service)["channels"].keys()
    page = client.get("/asyncapi")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "AsyncApiStandalone" in page.text or "asyncapi" in page.text.lower()


def test_the_document_is_not_served_unless_asked_for() -> None:
    client = TestClient(service_app("notifier"))
    assert client.get("/asyncapi.json").status_code == 404
    assert client.get("/asyncapi").status_code == 404

"""The chart's broker users: one per component with `amqp`, each service's AMQP_URL its own,
the administrator's only in the topology init containers, and definitions that say exactly
what lantern_runtime.messaging.permissions says (which tests/integration/test_broker_permissions
proves on the live RabbitMQ). Also: the values' `publishes` are what each service's code
declares it publishes, and the work queues follow the `<component>.<what>` convention the
read permissions rely on."""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from lantern_runtime.messaging.permissions import BrokerUser, definitions
from lantern_runtime.messaging.topology import EVENTS_EXCHANGE
from order_flow.topology import ORDER_FLOW
from tests.deploy.deploy_support import WITH_BROKER, chart_components

if TYPE_CHECKING:
    from tests.deploy.deploy_support import Render


def publishes(component: dict[str, Any]) -> tuple[str, ...]:
    amqp = component["amqp"]
    return tuple(amqp.get("publishes") or ()) if isinstance(amqp, dict) else ()


def containers(render: Render, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = render.get("Deployment", name)["spec"]["template"]["spec"]
    (main,) = spec["containers"]
    return main, spec.get("initContainers", [])


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        entry["name"]: (entry["valueFrom"]["secretKeyRef"]["name"], entry["valueFrom"]["secretKeyRef"]["key"])
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }


def admin_ref(render: Render) -> tuple[str, str]:
    rabbitmq = render.values["rabbitmq"]
    if rabbitmq["enabled"]:
        return ("rabbitmq-credentials", "url")
    return (rabbitmq["external"]["existingSecret"], rabbitmq["external"]["urlKey"])


def test_each_amqp_component_gets_its_own_url_and_only_its_topology_step_the_admins(render: Render) -> None:
    secret = "rabbitmq-credentials" if render.values["rabbitmq"]["enabled"] else admin_ref(render)[0]
    for name, component in render.values["components"].items():
        if not component["enabled"]:
            continue
        main, inits = containers(render, name)
        refs = secret_refs(main)
        if not component["amqp"]:
            assert "AMQP_URL" not in refs, name
            assert all(init["name"] != "topology" for init in inits), name
            continue
        assert refs["AMQP_URL"] == (secret, f"{name}-url"), (render.mode, name)
        assert admin_ref(render) not in refs.values(), f"{name}'s container can read the admin URL"
        [topology] = [init for init in inits if init["name"] == "topology"]
        assert topology["command"][:4] == ["python", "-m", "lantern_runtime.messaging.declare", name]
        assert secret_refs(topology) == {"AMQP_URL": admin_ref(render)}


def test_the_definitions_create_the_admin_and_one_user_per_component_with_the_permissions_of_the_code(
    renders: dict[str, Render],
) -> None:
    render = renders["default"]
    data = render.get("Secret", "rabbitmq-credentials")["stringData"]
    admin = render.values["rabbitmq"]["auth"]["username"]
    users = [
        BrokerUser(name, data[f"{name}-password"], name, publishes(component))
        for name, component in sorted(render.values["components"].items())
        if component["enabled"] and component["amqp"]
    ]
    expected = definitions("/", users, admin=BrokerUser(admin, data["password"], admin))
    assert json.loads(data["definitions.json"]) == expected
    for user in users:
        assert data[f"{user.name}-url"] == f"amqp://{user.name}:{user.password}@rabbitmq:5672/"
    assert {user.name for user in users} == set(WITH_BROKER)


def test_rabbitmq_loads_the_definitions_at_boot_with_the_message_size_limit_the_services_enforce(
    renders: dict[str, Render],
) -> None:
    render = renders["default"]
    conf = render.get("ConfigMap", "rabbitmq-config")["data"]["30-lantern.conf"].splitlines()
    limit = render.values["rabbitmq"]["maxMessageBytes"]
    assert f"max_message_size = {limit}" in conf
    assert "definitions.local.path = /etc/rabbitmq/lantern/definitions.json" in conf
    pod = render.get("StatefulSet", "rabbitmq")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "definitions"]
    assert volume["secret"]["secretName"] == "rabbitmq-credentials"
    assert volume["secret"]["items"] == [{"key": "definitions.json", "path": "definitions.json"}]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "definitions"]
    assert mount["mountPath"] == "/etc/rabbitmq/lantern"
    for name in WITH_BROKER:
        config = render.get("ConfigMap", f"{name}-config")["data"]
        assert config["BROKER_MAX_MESSAGE_BYTES"] == str(limit), name


@pytest.mark.parametrize("service", WITH_BROKER)
def test_the_values_publishes_are_what_the_services_code_declares_it_publishes(service: str) -> None:
    app = importlib.import_module(f"{service}.bootstrap").asyncapi()
    declared = {
        publisher.routing()
        for publisher in app.broker.publishers
        if getattr(publisher, "exchange", None) is not None
        and publisher.exchange.name == EVENTS_EXCHANGE.name
    }
    assert declared == set(publishes(chart_components()[service])), service


def test_work_queues_are_named_after_the_amqp_component_that_consumes_them() -> None:
    amqp = {name for name, c in chart_components().items() if c["amqp"]}
    for spec in ORDER_FLOW.queues:
        component, _, what = spec.name.partition(".")
        assert component in amqp and what and "." not in what, spec.name
    # Every event a queue is bound to has a component that may publish it.
    published = {event for c in chart_components().values() if c["amqp"] for event in publishes(c)}
    assert {key for spec in ORDER_FLOW.queues for key in spec.routing_keys} <= published

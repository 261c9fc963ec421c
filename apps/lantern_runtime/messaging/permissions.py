"""What one service's RabbitMQ user may do, from its name and the events it publishes.

The chart renders the same rules into RabbitMQ's definitions (templates/rabbitmq.yaml,
`lantern.brokerPermissions`), the devstack applies them with rabbitmqctl, and the tests check
that both agree with this module and hold on a live broker. For a component C that publishes
the events E (the chart's `components.C.amqp.publishes`):

- configure `^$`: it declares nothing (its declares are passive) and can delete nothing;
- write: `lantern.events` if it publishes anything, and `lantern.redeliveries`, where its
  consumers send a failed message to their own delay or dead queue. Never the default exchange,
  which would reach any queue by name, nor `lantern.dead-letters` (RabbitMQ's own);
- read: its work queues, named `C.<what>` (consume; RabbitMQ's purge needs read too, hence
  nothing else). Not their `.retry` or `.dead` queues: the CLI reads those as the admin;
- topic permissions, checked on every publish to a topic exchange: on lantern.events the
  routing keys E exactly, on lantern.redeliveries `C.<what>.retry` and `C.<what>.dead`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lantern_runtime.messaging.topology import EVENTS_EXCHANGE, REDELIVERIES_EXCHANGE

if TYPE_CHECKING:
    from collections.abc import Iterable

NOTHING = "^$"

# What Go's regexp.QuoteMeta (the chart's regexQuoteMeta) escapes, so both render one regex.
_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


def quote_meta(text: str) -> str:
    return _META.sub(r"\\\1", text)


def _exactly(names: Iterable[str]) -> str:
    quoted = [quote_meta(name) for name in names]
    return f"^({'|'.join(quoted)})$" if quoted else NOTHING


@dataclass(frozen=True)
class TopicPermission:
    exchange: str
    write: str
    read: str = NOTHING


@dataclass(frozen=True)
class BrokerPermissions:
    """One user's permissions on the release's vhost."""

    configure: str
    write: str
    read: str
    topics: tuple[TopicPermission, ...]


def service_permissions(component: str, publishes: Iterable[str]) -> BrokerPermissions:
    events = sorted(set(publishes))
    own = quote_meta(component)
    exchanges = [EVENTS_EXCHANGE.name] if events else []
    exchanges.append(REDELIVERIES_EXCHANGE.name)
    return BrokerPermissions(
        configure=NOTHING,
        write=_exactly(exchanges),
        read=f"^{own}\\.[^.]+$",
        topics=(
            TopicPermission(EVENTS_EXCHANGE.name, _exactly(events)),
            TopicPermission(REDELIVERIES_EXCHANGE.name, f"^{own}\\.[^.]+\\.(retry|dead)$"),
        ),
    )


@dataclass(frozen=True)
class BrokerUser:
    """A user to create: `component`'s, under `name` (the chart: the component's own name;
    the devstack: a name unique to its run, as users are global to the broker)."""

    name: str
    password: str
    component: str
    publishes: tuple[str, ...] = ()


def definitions(
    vhost: str, users: Iterable[BrokerUser], *, admin: BrokerUser | None = None
) -> dict[str, Any]:
    """RabbitMQ definitions (import_definitions, or at boot) creating `users` with their
    permissions on `vhost`: what the chart renders into definitions.json, admin and vhost
    included. RabbitMQ hashes a plain `password` itself on import (3.10 and 4.x alike)."""
    out: dict[str, Any] = {"users": [], "permissions": [], "topic_permissions": []}
    if admin is not None:
        out["users"].append({"name": admin.name, "password": admin.password, "tags": ["administrator"]})
        out["permissions"].append(
            {"user": admin.name, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
        )
        out["vhosts"] = [{"name": vhost}]
    for user in users:
        allowed = service_permissions(user.component, user.publishes)
        out["users"].append({"name": user.name, "password": user.password, "tags": []})
        out["permissions"].append(
            {
                "user": user.name,
                "vhost": vhost,
                "configure": allowed.configure,
                "write": allowed.write,
                "read": allowed.read,
            }
        )
        out["topic_permissions"] += [
            {"user": user.name, "vhost": vhost, "exchange": t.exchange, "write": t.write, "read": t.read}
            for t in allowed.topics
        ]
    return out

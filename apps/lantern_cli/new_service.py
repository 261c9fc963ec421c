"""`lantern new-service NAME --consumes EVENT`: a new consumer service, in every place that lists one.

Run at the root of a Lantern checkout. It writes (docs/adding-a-service.md walks through them):

- `apps/NAME/`: settings, bootstrap (all wiring), consumers (a handler per event type), the work
  port its handlers call and an in-memory implementation; with `--database` also its database
  work, its `migrations/` history (baseline: the inbox of applied messages) and DATABASE_URL;
- `tests/unit/test_NAME_handlers.py`: its handlers in memory with FastStream's TestRabbitBroker;
- one `work_queue(...)` line in `apps/order_flow/topology.py`: its queue, bound to the events;
- its entry in the chart's `components:` map (charts/lantern/values.yaml): the one list of
  services that the chart, `make run` and tests/deploy read. Its pod runs the one Lantern image
  (`python -m NAME`), so neither the Dockerfile nor skaffold.yaml changes.

Nothing is overwritten: a name or queue already taken is refused before anything is written.
"""

from __future__ import annotations

import datetime
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from devstack.stack import chart_components
from lantern_cli.errors import Refused

TEMPLATES = Path(__file__).parent / "service_template"
NAME = re.compile(r"^[a-z][a-z0-9]{1,30}$")
# Not a service port: the gateway's, and what devstack's trace sink and Jaeger use.
RESERVED_PORTS = {4317, 4318, 8080, 16686}


@dataclass(frozen=True)
class NewService:
    name: str
    consumes: tuple[str, ...]
    database: bool
    port: int
    summary: str

    @property
    def camel(self) -> str:
        return self.name.capitalize()

    @property
    def queue_name(self) -> str:
        prefixes = sorted({event.rsplit(".", 1)[0] for event in self.consumes})
        return f"{self.name}.{prefixes[0]}-events" if len(prefixes) == 1 else f"{self.name}.events"

    @property
    def queue_constant(self) -> str:
        return f"{self.name.upper()}_QUEUE"


def event_classes() -> dict[str, type[Any]]:
    """The order flow's events by event type (order_flow.events of the checkout on the path)."""
    from lantern_runtime.messaging import Event
    from order_flow import events

    return {
        cls.event_type: cls
        for _, cls in inspect.getmembers(events, inspect.isclass)
        if issubclass(cls, Event) and cls is not Event
    }


def plan(root: Path, name: str, consumes: list[str], *, database: bool, port: int | None) -> NewService:
    """Check everything before writing anything; Refused names what is wrong."""
    if not (root / "charts" / "lantern" / "values.yaml").is_file() or not (root / "apps").is_dir():
        raise Refused(f"{root} is not a Lantern checkout (no charts/lantern/values.yaml); run it at the root")
    if not NAME.match(name):
        raise Refused(
            f"{name!r} is not a service name: 2-31 lowercase letters and digits, starting with a letter "
            "(it is the Python package, the Kubernetes Service and the database name)"
        )
    if (root / "apps" / name).exists():
        raise Refused(f"apps/{name} exists already")
    if importlib.util.find_spec(name) is not None:
        raise Refused(f"{name!r} is already an importable module; `python -m {name}` would not be yours")
    known = event_classes()
    unknown = [event for event in consumes if event not in known]
    if not consumes or unknown:
        raise Refused(
            f"--consumes {', '.join(unknown) or '(none)'}: not an event of order_flow.events; "
            f"one or more of {', '.join(sorted(known))}"
        )
    components = chart_components(root / "charts" / "lantern")
    if name in components:
        raise Refused(f"the chart already has a component {name!r}")
    taken = {c.port for c in components.values()} | RESERVED_PORTS
    if port is None:
        port = max(p for p in taken if p < 8080) + 1
    if port in taken or not 1024 < port < 65536:
        raise Refused(f"port {port} is taken or reserved ({', '.join(map(str, sorted(taken)))})")
    events = tuple(dict.fromkeys(consumes))
    service = NewService(name, events, database, port, f"consumes {', '.join(events)}.")
    topology = (root / "apps" / "order_flow" / "topology.py").read_text()
    if f'"{service.queue_name}"' in topology or f"{service.queue_constant} =" in topology:
        raise Refused(f"apps/order_flow/topology.py already has {service.queue_name}")
    return service


def _example(cls: type[Any], values: dict[str, str] | None = None) -> dict[str, str]:
    """A valid body of the event, as JSON would carry it."""
    out = {}
    for field, info in cls.model_fields.items():
        if info.is_required():
            out[field] = "1" if info.annotation is not str else f"{field.split('_')[0][:1]}-1"
    return out | (values or {})


def write(root: Path, service: NewService) -> list[Path]:
    """Write the service and its entries; the paths written or edited, relative to root."""
    known = event_classes()
    consumed = [known[event] for event in service.consumes]
    other = next(cls for event, cls in sorted(known.items()) if event not in service.consumes)
    first_required = next(f for f, i in consumed[0].model_fields.items() if i.is_required())
    handler = Template((TEMPLATES / "handler.py.tmpl").read_text())
    fields = {
        "name": service.name,
        "Name": service.camel,
        "port": str(service.port),
        "summary": service.summary,
        "consumed": ", ".join(service.consumes),
        "queue_name": service.queue_name,
        "QUEUE": service.queue_constant,
        "event_imports": ", ".join(sorted(cls.__name__ for cls in consumed)),
        "test_event_imports": consumed[0].__name__,
        "handlers": "".join(
            handler.substitute(
                Event=cls.__name__,
                Event_doc=f"{service.name} applies {cls.event_type}.",
                event_func=cls.event_type.replace(".", "_").replace("-", "_"),
                event_type=cls.event_type,
            )
            for cls in consumed
        ),
        "example": f"{consumed[0].__name__}.model_validate({_example(consumed[0])!r})",
        "wrong_schema_field": first_required,
        "other_event": other.event_type,
        "today": datetime.date.today().isoformat(),
        "settings_fields": (
            "    # SQLite file by default; e.g. postgresql+asyncpg://user:pass@host:5432/"
            f'{service.name} in production.\n    database_url: str = "sqlite+aiosqlite:///{service.name}.db"\n'
            if service.database
            else ""
        ),
        "database_imports": (
            "from lantern_runtime.storage import create_engine\n"
            f"from {service.name}.database_work import Database{service.camel}Work\n"
            f"from {service.name}.migrations import HISTORY\n"
            if service.database
            else ""
        ),
        "work_imports": f"InMemory{service.camel}Work",
        "create_work": (
            "    engine = create_engine(settings.database_url)\n"
            f"    work = Database{service.camel}Work(engine)\n"
            if service.database
            else f"    work = InMemory{service.camel}Work()\n"
        ),
        "database_parts": ", engine=engine, migrations=HISTORY" if service.database else "",
    }
    package = Path("apps") / service.name
    files = {
        package / "__init__.py": "__init__.py.tmpl",
        package / "__main__.py": "__main__.py.tmpl",
        package / "settings.py": "settings.py.tmpl",
        package / "work.py": "work.py.tmpl",
        package / "consumers.py": "consumers.py.tmpl",
        package / "bootstrap.py": "bootstrap.py.tmpl",
        Path("tests") / "unit" / f"test_{service.name}_handlers.py": "test_handlers.py.tmpl",
    }
    if service.database:
        files |= {
            package / "database_work.py": "database_work.py.tmpl",
            package / "migrations" / "__init__.py": "migrations/__init__.py.tmpl",
            package / "migrations" / "env.py": "migrations/env.py.tmpl",
            package / "migrations" / "versions" / "0001_baseline.py": (
                "migrations/versions/0001_baseline.py.tmpl"
            ),
        }
    written: list[Path] = []
    for path, template in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(Template((TEMPLATES / template).read_text()).substitute(fields))
        written.append(path)
    if service.database:
        mako = package / "migrations" / "script.py.mako"
        shutil.copyfile(TEMPLATES / "migrations" / "script.py.mako", root / mako)
        written.append(mako)
    written += [
        _add_queue(root, service),
        _add_component(root, service),
    ]
    _tidy(root, [p for p in written if p.suffix == ".py"])
    return written


def _add_queue(root: Path, service: NewService) -> Path:
    path = Path("apps") / "order_flow" / "topology.py"
    text = (root / path).read_text()
    keys = ", ".join(f'"{event}"' for event in service.consumes)
    line = f'{service.queue_constant} = work_queue("{service.queue_name}", {keys})\n'
    marker = "\n\nORDER_FLOW = "
    if marker not in text:
        raise Refused(f"{path} has no `ORDER_FLOW = ` line to add {service.queue_name} above")
    (root / path).write_text(text.replace(marker, f"\n{line}\nORDER_FLOW = ", 1))
    return path


def _autoscaling(service: NewService) -> str:
    """The CPU HPA's settings and, for a consumer, KEDA's on its work queue (both off)."""
    cpu = "enabled: false, minReplicas: 1, maxReplicas: 4, targetCPUUtilizationPercentage: 70"
    if not service.consumes:
        return f"    autoscaling: {{{cpu}}}\n"
    keda = (
        f"enabled: false, queue: {service.queue_name}, minReplicas: 1, maxReplicas: 4, "
        "readyMessagesPerReplica: 50, pollingInterval: 15, cooldownPeriod: 300"
    )
    lines = ["autoscaling:", *(f"  {setting}" for setting in cpu.split(", "))]
    lines += [
        "  # Instead of the CPU HPA above (never both): KEDA scales on its work queue's ready messages.",
        f"  keda: {{{keda}}}",
    ]
    return "".join(f"    {line}\n" for line in lines)


def _add_component(root: Path, service: NewService) -> Path:
    """Its entry at the end of the chart's `components:` map, written as the others are."""
    path = Path("charts") / "lantern" / "values.yaml"
    lines = (root / path).read_text().splitlines(keepends=True)
    start = lines.index("components:\n")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace())
    while lines[end - 1].startswith("#") or not lines[end - 1].strip():
        end -= 1  # above the comment and blank lines that introduce the next key
    entry = f"""
  {service.name}:
    enabled: true
    replicas: 1
    port: {service.port}
    service: {{type: ClusterIP, nodePort: null}}
    env: {{}}
    # Its RabbitMQ user reads {service.queue_name}; list here the events it publishes.
    amqp: {{publishes: []}}
    database: {"true" if service.database else "false"}
    # true: it gets the key to verify the caller's subject the gateway signs (as orders does).
    trustsSubject: false
    # Components it sends HTTP requests to, e.g. [bank]; the NetworkPolicies open exactly those.
    calls: []
    egressTo: []
    resources:
      requests: {{cpu: 25m, memory: 96Mi}}
      limits: {{cpu: 250m, memory: 192Mi}}
    pdb: {{maxUnavailable: 1}}
{_autoscaling(service)}"""
    lines.insert(end, entry)
    (root / path).write_text("".join(lines))
    return path


def _tidy(root: Path, paths: list[Path]) -> None:
    """Sort imports and format as `make lint` wants, with the checkout's ruff when there is one."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        print("ruff not found: run `make lint` to sort the new files' imports", file=sys.stderr)
        return
    files = [str(path) for path in paths]
    subprocess.run([ruff, "check", "--fix", "--select", "I", "-q", *files], cwd=root, check=False)  # noqa: S603
    subprocess.run([ruff, "format", "-q", *files], cwd=root, check=False)  # noqa: S603


def new_service(root: Path, name: str, consumes: list[str], *, database: bool, port: int | None) -> int:
    service = plan(root, name, consumes, database=database, port=port)
    written = write(root, service)
    print(f"{service.name}: port {service.port}, queue {service.queue_name} ({', '.join(service.consumes)})")
    for path in written:
        print(f"  {path}")
    print(
        "Next (docs/adding-a-service.md): put the work in "
        f"apps/{service.name}/work.py, then `make lint`, "
        f"`.venv/bin/python -m pytest tests/unit/test_{service.name}_handlers.py tests/deploy -q` "
        "and `make run`."
    )
    if service.database:
        print(
            f"With an external PostgreSQL (staging) the Secret of postgres.external.existingSecret "
            f"needs key {service.name}-url."
        )
    return 0

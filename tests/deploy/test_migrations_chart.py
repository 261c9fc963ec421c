"""The chart migrates each service's database before the service starts: an init container in
every pod of a component with a database runs the migration CLI from the component's own image,
against the same database as the service, under the same restrictions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import yaml

from lantern_runtime.storage.migrate import build_parser
from lantern_runtime.storage.migrations import history_of
from tests.deploy.deploy_support import SERVICES, WITH_DATABASE, template_args

if TYPE_CHECKING:
    from tests.deploy.deploy_support import Render

pytestmark = pytest.mark.deploy

WITHOUT_DATABASE = tuple(name for name in SERVICES if name not in WITH_DATABASE)


def _pod(render: Render, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = render.get("Deployment", name)["spec"]["template"]["spec"]
    return spec


def rendered(helm: Any, override: str) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(helm(*template_args("--set", override)).stdout) if o]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_each_database_owner_migrates_in_an_init_container_before_it_starts(render: Render) -> None:
    for name in WITH_DATABASE:
        pod = _pod(render, name)
        # First, before the topology step of a component with a broker too.
        migrate = pod["initContainers"][0]
        (service,) = pod["containers"]
        assert migrate["name"] == "migrate"
        assert migrate["image"] == service["image"], name
        command = migrate["command"]
        assert command[:3] == ["python", "-m", "lantern_runtime.storage.migrate"]
        # As the CLI's own parser reads it: this service's history, to head, waiting for the database.
        arguments = build_parser().parse_args(command[3:])
        assert (arguments.service, arguments.action, arguments.to) == (name, "upgrade", "head")
        assert arguments.wait == render.values["migrations"]["waitSeconds"] > 0
        assert history_of(arguments.service).heads()
        # The very database the service uses, and nothing else it holds (no broker, no keys).
        assert _env(migrate) == {"DATABASE_URL": _env(service)["DATABASE_URL"]}, name
        assert not migrate.get("envFrom")
        assert migrate["securityContext"] == service["securityContext"]
        assert {"requests", "limits"} <= set(migrate["resources"])
        # A SQLite file in /tmp (no PostgreSQL) is the pod's own: both containers mount it.
        mounts = {m["mountPath"]: m["name"] for m in migrate["volumeMounts"]}
        assert mounts["/tmp"] == {m["mountPath"]: m["name"] for m in service["volumeMounts"]}["/tmp"]  # noqa: S108
    for name in WITHOUT_DATABASE:
        assert "migrate" not in _init_names(_pod(render, name)), name


def _init_names(pod: dict[str, Any]) -> list[str]:
    return [init["name"] for init in pod.get("initContainers", [])]


def test_without_postgres_the_init_container_migrates_the_pods_own_sqlite_file(helm) -> None:
    objects = [
        o for o in yaml.safe_load_all(helm(*template_args("--set", "postgres.enabled=false")).stdout) if o
    ]
    for name in WITH_DATABASE:
        (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
        pod = deployment["spec"]["template"]["spec"]
        migrate = pod["initContainers"][0]
        (service,) = pod["containers"]
        url = f"sqlite+aiosqlite:////tmp/{name}.db"
        assert _env(migrate)["DATABASE_URL"] == {"name": "DATABASE_URL", "value": url}
        assert _env(service)["DATABASE_URL"]["value"] == url


def test_migrations_can_be_left_to_the_operator(helm) -> None:
    objects = [
        o for o in yaml.safe_load_all(helm(*template_args("--set", "migrations.enabled=false")).stdout) if o
    ]
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert deployments
    assert not [d for d in deployments if "migrate" in _init_names(d["spec"]["template"]["spec"])]


@pytest.mark.parametrize(
    ("override", "complaint"),
    [("migrations.waitSeconds=0", "waitSeconds"), ("migrations.enabeld=true", "enabeld")],
)
def test_the_schema_refuses_bad_migration_values(helm, override: str, complaint: str) -> None:
    result = helm(*template_args("--set", override), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr

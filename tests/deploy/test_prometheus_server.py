"""The chart's rendered Prometheus configuration and alert rules in a real Prometheus: Debian
trixie's `prometheus` and `promtool` 2.53, fetched once into ~/.cache/lantern (never the
host's apt sources; tests/metrics_store.py does the fetching) and started on a loopback port.
The chart's image is Prometheus 3; what it is given must load in both, so the server here
runs with the chart's own flags. Where the packages cannot be fetched, the tests skip and
say why."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.metrics_store import Unavailable, trixie_package

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.deploy.deploy_support import Render

pytestmark = pytest.mark.deploy

UNIT_TESTS = Path(__file__).parent / "prometheus" / "alerts_test.yml"
ALERT_NAMES = {
    "LanternDeadLetters",
    "LanternOutboxStalled",
    "LanternErrorRatioHigh",
    "LanternQueueWithoutConsumer",
}


def _debian_tool(package: str, tool: str) -> Path:
    try:
        path = trixie_package(package) / "usr" / "bin" / tool
    except Unavailable as reason:
        pytest.skip(str(reason))
    if not path.is_file():
        pytest.skip(f"Debian's {package} package holds no {tool}")
    return path


@pytest.fixture(scope="module")
def promtool() -> Path:
    return _debian_tool("promtool", "promtool")


@pytest.fixture(scope="module")
def prometheus_bin() -> Path:
    return _debian_tool("prometheus", "prometheus")


@pytest.fixture
def rendered(renders: dict[str, Render], tmp_path: Path) -> Path:
    """The kind render's prometheus.yml with its rules beside it, as the pod mounts them."""
    render = renders["kind"]
    for configmap in ("prometheus-config", "prometheus-rules"):
        for key, text in render.get("ConfigMap", configmap)["data"].items():
            (tmp_path / key).write_text(text)
    return tmp_path


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_promtool_accepts_the_rendered_config_and_its_rules(promtool: Path, rendered: Path) -> None:
    checked = _run(promtool, "check", "config", rendered / "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # check config also checks the rule files it names.
    assert "SUCCESS: 1 rule files found" in checked.stdout
    rules = _run(promtool, "check", "rules", rendered / "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in rules.stdout


def test_each_alert_fires_when_its_condition_holds_and_not_otherwise(promtool: Path, rendered: Path) -> None:
    shutil.copy(UNIT_TESTS, rendered / UNIT_TESTS.name)
    tested = _run(promtool, "test", "rules", UNIT_TESTS.name, cwd=rendered)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has a case, so a new alert without one fails here.
    covered = {
        line.split(":", 1)[1].strip() for line in UNIT_TESTS.read_text().splitlines() if "alertname:" in line
    }
    assert covered == ALERT_NAMES


def test_the_unit_tests_catch_a_threshold_that_never_fires(promtool: Path, rendered: Path) -> None:
    rules = rendered / "alerts.yml"
    rules.write_text(
        rules.read_text().replace(
            "lantern_outbox_oldest_age_seconds) > 60", "lantern_outbox_oldest_age_seconds) > 6000"
        )
    )
    shutil.copy(UNIT_TESTS, rendered / UNIT_TESTS.name)
    tested = _run(promtool, "test", "rules", UNIT_TESTS.name, cwd=rendered)
    assert tested.returncode != 0
    assert "LanternOutboxStalled" in tested.stdout + tested.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


def _chart_args(render: Render) -> list[str]:
    statefulset = render.get("StatefulSet", "prometheus")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args


@pytest.fixture
def prometheus_url(prometheus_bin: Path, renders: dict[str, Render], rendered: Path) -> Iterator[str]:
    """Debian's Prometheus with the chart's flags, only its paths and address made local."""
    port = _free_port()
    local = {
        "--config.file": rendered / "prometheus.yml",
        "--storage.tsdb.path": rendered / "data",
        "--web.listen-address": f"127.0.0.1:{port}",
    }
    args = []
    for arg in _chart_args(renders["kind"]):
        flag = arg.split("=", 1)[0]
        args.append(f"{flag}={local[flag]}" if flag in local else arg)
    assert {a.split("=", 1)[0] for a in args} >= set(local), args
    log = (rendered / "prometheus.log").open("w")
    process = subprocess.Popen([str(prometheus_bin), *args], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited {process.returncode}:\n{_tail(rendered / 'prometheus.log')}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready in 20 s:\n{_tail(rendered / 'prometheus.log')}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_prometheus_starts_with_the_charts_flags_and_loads_every_rule(prometheus_url: str) -> None:
    body: dict[str, Any] = httpx.get(f"{prometheus_url}/api/v1/rules", timeout=5).json()
    assert body["status"] == "success"
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == ALERT_NAMES
    assert all(r["health"] != "err" for r in rules), [r.get("lastError") for r in rules]
    flags = httpx.get(f"{prometheus_url}/api/v1/status/flags", timeout=5).json()["data"]
    assert "exemplar-storage" in flags["enable-feature"]
    config = httpx.get(f"{prometheus_url}/api/v1/status/config", timeout=5).json()["data"]["yaml"]
    assert "job_name: otel-collector" in config
    assert "job_name: rabbitmq" in config

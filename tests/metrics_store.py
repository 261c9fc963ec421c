"""A real PromQL store for the tests: VictoriaMetrics and vmalert from Debian trixie's
`victoria-metrics` package, started on loopback ports with a data directory of the test's own.

Why VictoriaMetrics: it takes OTLP metrics at /opentelemetry/v1/metrics, so the services send
to it what the chart's collector forwards, and it answers PromQL and evaluates Prometheus rule
files (vmalert). Debian's Prometheus 2.53 has no OTLP receiver; it would need an exporter in
between that the chart does not have. VictoriaMetrics also scrapes, as the chart's Prometheus
does: RabbitMQ's own endpoint here.

The package is fetched once through an apt configuration of this module's own under
~/.cache/lantern (LANTERN_CACHE), never the host's sources, and unpacked with dpkg -x. Where it
cannot be fetched, `Unavailable` says why, and the tests that need it skip with that reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from devstack.loopback import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

CACHE_DIR = Path(os.environ.get("LANTERN_CACHE", Path.home() / ".cache" / "lantern"))
TRIXIE = CACHE_DIR / "trixie"
MIRROR = os.environ.get("LANTERN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
RABBITMQ_PROMETHEUS_PORT = 15692


class Unavailable(Exception):
    """What a test needs cannot be had here; the message says why."""


def _apt_options() -> list[str]:
    apt = TRIXIE / "apt"
    sources = apt / "sources.list"
    if not sources.exists():
        for part in ("state/lists/partial", "cache/archives/partial"):
            (apt / part).mkdir(parents=True, exist_ok=True)
        sources.write_text(f"deb [signed-by={KEYRING}] {MIRROR} trixie main\n")
    return [
        f"-oDir::Etc::SourceList={sources}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State={apt / 'state'}",
        f"-oDir::Cache={apt / 'cache'}",
        # The host's installed packages are none of this configuration's business.
        "-oDir::State::status=/dev/null",
        "-oDebug::NoLocking=1",
        # apt drops to the _apt user for downloads, who cannot write under root's home.
        *(["-oAPT::Sandbox::User=root"] if os.geteuid() == 0 else []),
    ]


def _apt(*args: str, cwd: Path | None = None) -> None:
    done = subprocess.run(
        ["apt-get", "-q", *_apt_options(), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        check=False,
    )
    if done.returncode != 0:
        raise Unavailable(f"apt-get {' '.join(args)} (trixie, {MIRROR}) failed:\n{done.stderr[-1500:]}")


def trixie_package(package: str) -> Path:
    """The root of `package` from Debian trixie, unpacked (not installed) under the cache."""
    root = TRIXIE / package / "root"
    if (root / ".unpacked").exists():
        return root
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise Unavailable(f"no {tool} to fetch Debian's {package} with")
    if not KEYRING.exists():
        raise Unavailable(
            f"no {KEYRING} to check Debian's archive with (apt-get install debian-archive-keyring)"
        )
    TRIXIE.mkdir(parents=True, exist_ok=True)
    # Several test runs may fetch at once; one does, the others find it done.
    with (TRIXIE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".unpacked").exists():
            return root
        debs = TRIXIE / package / "debs"
        shutil.rmtree(debs, ignore_errors=True)
        debs.mkdir(parents=True)
        _apt("update")
        _apt("download", package, cwd=debs)
        shutil.rmtree(root, ignore_errors=True)
        for deb in debs.glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=300)
        (root / ".unpacked").write_text("\n".join(deb.name for deb in debs.glob("*.deb")))
    return root


def victoria_metrics_bin() -> Path:
    """The directory holding victoria-metrics, vmalert and vmalert-tool."""
    bin_dir = trixie_package("victoria-metrics") / "usr" / "bin"
    for tool in ("victoria-metrics", "vmalert"):
        if not (bin_dir / tool).is_file():
            raise Unavailable(f"Debian's victoria-metrics package holds no {tool} (looked in {bin_dir})")
    return bin_dir


def rabbitmq_prometheus_unavailable() -> str | None:
    """None once RabbitMQ's Prometheus endpoint answers, else why it cannot.

    The plugin ships with RabbitMQ; enabling it --online starts it in the running node without
    a restart, so the other clients of this machine's broker keep their connections.
    """
    url = f"http://127.0.0.1:{RABBITMQ_PROMETHEUS_PORT}/metrics"
    if _answers(url):
        return None
    if shutil.which("rabbitmq-plugins") is None:
        return "RabbitMQ's Prometheus endpoint is off and there is no rabbitmq-plugins to enable it"
    done = subprocess.run(
        ["rabbitmq-plugins", "enable", "--online", "rabbitmq_prometheus"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        return f"rabbitmq-plugins enable --online rabbitmq_prometheus failed: {done.stderr.strip()}"
    deadline = time.monotonic() + 20
    while not _answers(url):
        if time.monotonic() > deadline:
            return f"rabbitmq_prometheus enabled, but {url} does not answer"
        time.sleep(0.2)
    return None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def rabbitmq_scrape_job(vhost: str, interval: str = "1s") -> dict[str, Any]:
    """A scrape job for RabbitMQ's per-queue metrics of one vhost: depth (ready, unacked) and
    consumers, as the chart's Prometheus scrapes them."""
    return {
        "job_name": "rabbitmq",
        "scrape_interval": interval,
        "metrics_path": "/metrics/detailed",
        "params": {"vhost": [vhost], "family": ["queue_coarse_metrics", "queue_consumer_count"]},
        "static_configs": [{"targets": [f"127.0.0.1:{RABBITMQ_PROMETHEUS_PORT}"]}],
    }


@dataclass
class MetricsStore:
    url: str
    log: Path

    @property
    def otlp_metrics_url(self) -> str:
        """What OTEL_EXPORTER_OTLP_METRICS_ENDPOINT names for the services to send here."""
        return f"{self.url}/opentelemetry/v1/metrics"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query's result: [{"metric": {labels}, "value": [t, "v"]}, ...]."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{expr}: {response.text}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expr: str, by: str) -> dict[str, float]:
        """The result as {value of label `by`: value}."""
        return {sample["metric"].get(by, ""): float(sample["value"][1]) for sample in self.query(expr)}

    def series(self, match: str) -> list[dict[str, str]]:
        response = httpx.get(f"{self.url}/api/v1/series", params={"match[]": match}, timeout=10)
        series: list[dict[str, str]] = response.json()["data"]
        return series

    def wait_for(
        self, expr: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """The query's result once `done` holds for it, or as it is when the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if done(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.25)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@contextmanager
def _running(args: list[str], health_url: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(process, health_url, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def victoria_metrics(workdir: Path, scrape_jobs: Sequence[dict[str, Any]] = ()) -> Iterator[MetricsStore]:
    """VictoriaMetrics on a free loopback port, storing under `workdir`, scraping `scrape_jobs`."""
    bin_dir = victoria_metrics_bin()
    port = free_port()
    args = [
        str(bin_dir / "victoria-metrics"),
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={workdir / 'data'}",
        "-retentionPeriod=1d",
        "-memory.allowedBytes=256MiB",
        # http.server.request.duration becomes http_server_request_duration_seconds_bucket: the
        # OTLP-to-Prometheus naming, as the collector's prometheus exporter names it in the chart.
        "-opentelemetry.usePrometheusNaming",
        # A sample is queryable at once, not after the default 30 s meant for late writers.
        "-search.latencyOffset=0s",
        "-search.disableCache",
    ]
    if scrape_jobs:
        config = workdir / "scrape.yml"
        config.write_text(yaml.safe_dump({"scrape_configs": list(scrape_jobs)}))
        args.append(f"-promscrape.config={config}")
    url = f"http://127.0.0.1:{port}"
    log = workdir / "victoria-metrics.log"
    with _running(args, f"{url}/health", log):
        yield MetricsStore(url, log)


@dataclass
class AlertEvaluator:
    url: str
    log: Path

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """The active alerts named `name` (pending or firing), each with its labels and state."""
        body = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        return [alert for alert in body["data"]["alerts"] if alert["name"] == name]

    def last_evaluation(self, name: str) -> datetime:
        """When the rule `name` was last evaluated; it must have been without an error."""
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        for group in body["data"]["groups"]:
            for rule in group["rules"]:
                if rule["name"] == name:
                    assert not rule.get("lastError"), f"{name}: {rule['lastError']}"
                    # RFC 3339 with nanoseconds; Python's parser takes microseconds at most.
                    stamp = re.sub(r"(\.\d{6})\d*", r"\1", rule["lastEvaluation"]).replace("Z", "+00:00")
                    return datetime.fromisoformat(stamp)
        raise AssertionError(f"vmalert has no rule {name}: {json.dumps(body)[:2000]}")

    def evaluated_after(self, name: str, moment: datetime, timeout: float = 15.0) -> None:
        """Wait until the rule has been evaluated on what the store held at `moment`: an
        evaluation started over a second later (vmalert aligns its query times to the second)."""
        deadline = time.monotonic() + timeout
        while (self.last_evaluation(name) - moment).total_seconds() <= 1.0:
            assert time.monotonic() < deadline, f"vmalert has not evaluated {name} since {moment}"
            time.sleep(0.2)


@contextmanager
def vmalert(workdir: Path, store: MetricsStore, rules: Path) -> Iterator[AlertEvaluator]:
    """vmalert evaluating the Prometheus rule file `rules` against `store` every second; its
    notifications go nowhere, the test reads the alerts' state from its API."""
    port = free_port()
    args = [
        str(victoria_metrics_bin() / "vmalert"),
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-datasource.url={store.url}",
        f"-rule={rules}",
        "-evaluationInterval=1s",
        # The store serves a sample at once (-search.latencyOffset=0s), so no delay here either.
        "-rule.evalDelay=0s",
        "-notifier.blackhole",
    ]
    url = f"http://127.0.0.1:{port}"
    log = workdir / "vmalert.log"
    with _running(args, f"{url}/health", log):
        yield AlertEvaluator(url, log)

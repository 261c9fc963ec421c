"""Two real gateway processes sharing one Redis: a client's limit is one bucket across both.

A Redis error would fall back to a bucket per process with the same numbers, so each test also
shows Redis counted: the client's bucket is in Redis, and neither gateway logged a fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
import redis

from devstack.loopback import free_port, serving
from gateway.auth import issue_token
from tests.integration.test_gateway_edge import upstream_app

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

SECRET = "r" * 48
RATE = 2.0  # bursts of 4
REDIS_URL = "redis://127.0.0.1:6379/0"
PREFIX = f"lantern-test:{uuid.uuid4().hex[:10]}:"
LOGS: list[Path] = []


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    logs: Path = tmp_path_factory.mktemp("gateways")
    prefix = PREFIX
    with serving(upstream_app()) as upstream:
        ports = [free_port(), free_port()]
        processes = []
        for port in ports:
            env = {
                **os.environ,
                "PORT": str(port),
                "REDIS_URL": REDIS_URL,
                "GATEWAY_RATE_LIMIT": str(RATE),
                "GATEWAY_RATE_LIMIT_PREFIX": prefix,
                # Under a loaded CI a 0.5 s Redis timeout would fall back to per-process buckets.
                "GATEWAY_REDIS_TIMEOUT": "10",
                "GATEWAY_JWT_SECRET": SECRET,
                "GATEWAY_UPSTREAMS": json.dumps({"orders": upstream}),
                "OTEL_SDK_DISABLED": "true",
            }
            LOGS.append(logs / f"gateway-{port}.log")
            log = LOGS[-1].open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        try:
            wait_ready(urls, processes)
            yield urls
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(20)


def wait_ready(urls: list[str], processes: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for url, process in zip(urls, processes, strict=True):
        while True:
            assert process.poll() is None, f"the gateway at {url} exited with {process.returncode}"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the gateway at {url} did not get ready"
            time.sleep(0.1)


def assert_counted_by_redis(subject: str) -> None:
    """The bucket is Redis's, and no request of either gateway fell back to its own."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert client.hgetall(f"{PREFIX}sub:{subject}"), f"no bucket of {subject} in Redis"
    finally:
        client.close()
    fell_back = [log.name for log in LOGS if "falls back to memory" in log.read_text(errors="replace")]
    assert not fell_back, f"rate limiting fell back to memory in {fell_back}"


def headers(subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, subject=subject, scopes=['orders:read'])}"}


def test_two_gateways_admit_one_buckets_worth_between_them(gateways: list[str]) -> None:
    subject = f"alice-{uuid.uuid4().hex[:6]}"
    alice = headers(subject)
    started = time.monotonic()
    statuses = [
        httpx.get(f"{gateways[i % 2]}/api/orders/o-1", headers=alice, timeout=5).status_code
        for i in range(16)
    ]
    elapsed = time.monotonic() - started
    admitted = statuses.count(200)
    # Separate in-memory buckets would admit a full burst (4) on each gateway.
    assert 4 <= admitted <= 4 + int(elapsed * RATE), statuses
    assert statuses[:2] == [200, 200], "both gateways admit from the full bucket"
    assert set(statuses) == {200, 429}
    assert_counted_by_redis(subject)


def test_another_subject_is_admitted_while_the_first_is_throttled(gateways: list[str]) -> None:
    subjects = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    alice, bob = map(headers, subjects)
    # Spend alice's bucket until she is refused (a loaded machine refills it as it goes).
    for i in range(50):
        throttled = httpx.get(f"{gateways[i % 2]}/api/orders/o-1", headers=alice, timeout=5)
        if throttled.status_code == 429:
            break
    bobs = [httpx.get(f"{url}/api/orders/o-1", headers=bob, timeout=5) for url in gateways]
    assert throttled.status_code == 429
    assert throttled.headers["ratelimit-remaining"] == "0"
    assert [r.status_code for r in bobs] == [200, 200]
    for subject in subjects:
        assert_counted_by_redis(subject)

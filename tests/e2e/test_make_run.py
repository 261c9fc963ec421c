"""`python -m devstack` (what `make run` runs) refuses clearly when RabbitMQ is not there."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_an_unreachable_rabbitmq_is_named_with_how_to_start_it(tmp_path: object) -> None:
    url = "amqp://guest:guest@127.0.0.1:1/"
    result = subprocess.run(
        [sys.executable, "-m", "devstack"],
        env={**os.environ, "AMQP_URL": url, "LANTERN_DEV_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"AMQP_URL={url}" in result.stderr
    assert "rabbitmq-server -detached" in result.stderr

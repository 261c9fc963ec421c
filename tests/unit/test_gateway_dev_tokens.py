"""Tokens for development and the helm smoke test: a kept secret, ready-made tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import jwt

from devstack.stack import Stack, development_secret

if TYPE_CHECKING:
    from pathlib import Path


def test_the_development_secret_is_made_once_kept_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "dev" / "jwt-secret"
    first = development_secret(path)
    assert len(first) >= 32
    assert path.stat().st_mode & 0o077 == 0
    assert development_secret(path) == first


def test_stack_auth_headers_carry_a_token_for_its_gateways_secret(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    scheme, token = stack.auth_headers(scopes=("orders:read",), subject="probe")["Authorization"].split()
    claims = jwt.decode(token, stack.jwt_secret, algorithms=["HS256"])
    assert scheme == "Bearer"
    assert (claims["sub"], claims["scope"]) == ("probe", "orders:read")
    assert stack.env_for("gateway")["GATEWAY_JWT_SECRET"] == stack.jwt_secret
    assert "GATEWAY_JWT_SECRET" not in stack.env_for("orders") or os.environ.get("GATEWAY_JWT_SECRET")


def test_the_smoke_check_refuses_to_run_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LANTERN_SMOKE_TOKEN"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lantern_runtime.smoke",
            "--gateway",
            "http://127.0.0.1:1",
            "--jaeger",
            "http://127.0.0.1:1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "LANTERN_SMOKE_TOKEN" in result.stderr

"""`lantern token --ttl`: a development token lives at least a second and at most a day."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jwt
import pytest

from lantern_cli.__main__ import main
from lantern_cli.commands import MAX_TOKEN_TTL, token
from lantern_cli.local import LocalStack

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "d" * 64


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    """The local stack's development secret in a directory of its own."""
    for name in ("GATEWAY_JWT_SECRET", "GATEWAY_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANTERN_DEV_DIR", str(tmp_path))
    (tmp_path / "jwt-secret").write_text(SECRET)
    # A query URL of its own: nothing looks for a local Jaeger.
    return LocalStack(workdir=tmp_path, query_url="http://127.0.0.1:9")


def lifetime(minted: str) -> int:
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"])
    return int(claims["exp"]) - int(claims["iat"])


def test_a_token_of_the_maximum_lifetime_is_minted(
    local: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert token(local, scopes=["orders:read"], subject="s", ttl=MAX_TOKEN_TTL) == 0
    assert lifetime(capsys.readouterr().out.strip()) == 24 * 3600


@pytest.mark.parametrize("ttl", ["86401", "1e9", "inf", "nan", "0", "0.5", "-60"])
def test_a_ttl_beyond_a_day_or_below_a_second_is_refused_naming_the_bounds(
    local: LocalStack, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    assert main(["--local", "token", "--ttl", ttl]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--ttl" in captured.err
    assert "at most 86400 seconds (24 h)" in captured.err


def test_the_cli_mints_a_token_of_the_ttl_asked_for(
    local: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--local", "token", "--ttl", "600", "--subject", "s"]) == 0
    assert lifetime(capsys.readouterr().out.strip()) == 600

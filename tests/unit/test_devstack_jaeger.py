"""`make run` starts Jaeger from a binary on PATH, else from an image a local Docker engine has
already (nothing is pulled), else not at all: the trace sink stands in."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from devstack.stack import jaeger_command

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def fake_tool(bin_dir: Path, name: str, script: str) -> None:
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)


def only_on_path(monkeypatch: pytest.MonkeyPatch, bin_dir: Path) -> None:
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")


def test_a_jaeger_binary_on_path_is_started_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path, "jaeger", "exit 0")
    fake_tool(tmp_path, "docker", "exit 1")
    only_on_path(monkeypatch, tmp_path)
    assert jaeger_command() == [str(tmp_path / "jaeger")]


def test_without_a_binary_the_charts_jaeger_image_runs_in_the_local_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tool(tmp_path, "docker", "printf 'jaegertracing/jaeger:2.0.0\\njaegertracing/jaeger:2.21.0\\n'")
    only_on_path(monkeypatch, tmp_path)
    command = jaeger_command()
    assert command is not None
    assert command[:3] == ["docker", "run", "--rm"]
    assert command[-1] == "jaegertracing/jaeger:2.21.0"
    assert "127.0.0.1:16686:16686" in command and "127.0.0.1:4318:4318" in command


def test_no_binary_and_no_local_image_means_the_trace_sink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tool(tmp_path, "docker", "exit 0")
    only_on_path(monkeypatch, tmp_path)
    assert jaeger_command() is None
    fake_tool(tmp_path, "docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1")
    assert jaeger_command() is None

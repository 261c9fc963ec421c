"""The devstack's state directory is its owner's alone: 0700, with 0600 files, however it was left."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from devstack.private import private_directory, private_log
from devstack.stack import development_secret

if TYPE_CHECKING:
    from pathlib import Path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_state_directory_is_0700_and_its_secret_0600(tmp_path: Path) -> None:
    secret = development_secret(tmp_path / "deep" / ".lantern" / "jwt-secret")
    assert len(secret) == 64
    assert mode(tmp_path / "deep" / ".lantern") == 0o700
    assert mode(tmp_path / "deep" / ".lantern" / "jwt-secret") == 0o600


def test_a_state_directory_left_readable_is_tightened_with_everything_in_it(tmp_path: Path) -> None:
    workdir = tmp_path / ".lantern"
    (workdir / "logs" / "old").mkdir(parents=True)
    for directory in (workdir, workdir / "logs", workdir / "logs" / "old"):
        directory.chmod(0o755)
    for name in ("jwt-secret", "orders.db", "spans.jsonl", "logs/orders.log", "logs/old/bank.log"):
        (workdir / name).write_text("kept")
        (workdir / name).chmod(0o644)
    # A link out of the workdir is not followed: what it points to keeps its mode.
    outside = tmp_path / "shared.txt"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (workdir / "shared").symlink_to(outside)

    assert development_secret(workdir / "jwt-secret") == "kept"

    assert mode(workdir) == 0o700
    for path in workdir.rglob("*"):
        if path.is_symlink():
            continue
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert (workdir / "logs" / "old" / "bank.log").read_text() == "kept"
    assert mode(outside) == 0o644


def test_a_log_is_created_0600_and_an_existing_one_tightened_and_appended_to(tmp_path: Path) -> None:
    private_directory(tmp_path / "logs")
    with private_log(tmp_path / "logs" / "new.log") as log:
        log.write(b"one\n")
    assert mode(tmp_path / "logs" / "new.log") == 0o600

    old = tmp_path / "logs" / "old.log"
    old.write_bytes(b"before\n")
    old.chmod(0o644)
    with private_log(old) as log:
        log.write(b"after\n")
    assert mode(old) == 0o600
    assert old.read_bytes() == b"before\nafter\n"

"""The devstack's state directory (.lantern by default) is its owner's alone: it holds the
development JWT secret, the services' logs and SQLite databases, and the spans they send.

The directory is 0700 and everything in it 0600 (directories 0700). A directory left looser,
by an older checkout or by hand, is tightened when the devstack next writes to it. Processes the
devstack starts run with PRIVATE_UMASK, so what they create (databases, spans) is private too.
"""

from __future__ import annotations

import contextlib
import os
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["PRIVATE_UMASK", "private_directory", "private_log"]

PRIVATE_UMASK = 0o077
DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def private_directory(path: Path) -> Path:
    """`path` made (with any missing parents) or tightened to 0700, with everything already
    under it tightened: directories to 0700, files to 0600. Symbolic links are left alone, and
    what they point to with them."""
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    path.chmod(DIRECTORY_MODE)
    for root, directories, files in os.walk(path):
        for name in directories:
            _tighten(os.path.join(root, name), DIRECTORY_MODE)
        for name in files:
            _tighten(os.path.join(root, name), FILE_MODE)
    return path


def _tighten(path: str, mode: int) -> None:
    if os.path.islink(path):
        return
    # Gone since it was listed (a SQLite journal, say): nothing to tighten.
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, mode)


def private_log(path: Path) -> IO[bytes]:
    """`path` opened for appending, created 0600 or tightened to it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)
    return os.fdopen(descriptor, "ab")

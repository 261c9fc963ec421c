"""The lock files agree with pyproject.toml and with the venv the suite runs in.

requirements.lock pins what the images install ([project].dependencies and everything they pull
in); requirements-dev.lock pins that plus the dev and cli extras, and `make` builds .venv from it.
When a dependency in pyproject.toml changes without `make lock`, or the venv was built some other
way, these tests say which package is off. The dependency tree is walked through the installed
packages' own metadata, so nothing here needs the network.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
# The extras the dev lock covers; grpc stays out (the suite checks the error for its absence).
DEV_EXTRAS = ("dev", "cli")
REFRESH = "run `make lock` and commit both lock files"

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: tuple[str, ...]


def read_lock(path: Path) -> dict[str, Pin]:
    """Each entry of a pip-compile file: `name==version \\` then its `--hash=` lines."""
    pins: dict[str, Pin] = {}
    entries = re.sub(r"\\\n", " ", path.read_text())
    for number, line in enumerate(entries.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        match = PIN.match(requirement)
        assert match, f"{path.name} entry {number} is not pinned with ==: {line!r}"
        bad = [option for option in options if not HASH.match(option)]
        assert not bad, f"{path.name}: {requirement} carries something other than sha256 hashes: {bad}"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{path.name} pins {name} twice"
        pins[name] = Pin(Version(match["version"]), tuple(options))
    return pins


def top_level(extras: Iterable[str] = ()) -> list[Requirement]:
    declared = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        declared += PYPROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(text) for text in declared]


# The Python of the images' Debian bookworm base, older than this venv's: markers such as
# redis's `python_full_version < "3.11.3"` pull in packages there that this Python does not need.
BOOKWORM_PYTHON = {"python_version": "3.11", "python_full_version": "3.11.2"}


def applies(requirement: Requirement, extras: frozenset[str], python: dict[str, str] | None = None) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**(python or {}), "extra": extra}) for extra in extras or {""})


def closure(
    roots: list[Requirement], pins: dict[str, Pin], lock: str, python: dict[str, str] | None = None
) -> set[str]:
    """Every package the roots need on Linux with this CPython (or `python`'s version), each
    checked against its pin."""
    needed: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(root, "pyproject.toml") for root in roots if applies(root, frozenset(), python)]
    while todo:
        requirement, wanted_by = todo.pop()
        extras = frozenset(canonicalize_name(extra) for extra in requirement.extras)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{wanted_by} needs {requirement}, which {lock} does not pin; {REFRESH}"
        version = pins[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{wanted_by} needs {requirement}, but {lock} pins {name}=={version}; {REFRESH}"
        )
        needed.add(name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for text in metadata.distribution(name).requires or []:
            dependency = Requirement(text)
            if applies(dependency, extras, python):
                todo.append((dependency, f"{name} {version}"))
    return needed


@pytest.fixture(scope="module")
def runtime_pins() -> dict[str, Pin]:
    return read_lock(RUNTIME_LOCK)


@pytest.fixture(scope="module")
def dev_pins() -> dict[str, Pin]:
    return read_lock(DEV_LOCK)


def test_every_runtime_dependency_and_what_it_pulls_in_is_pinned_and_nothing_else(
    runtime_pins: dict[str, Pin],
) -> None:
    needed = closure(top_level(), runtime_pins, RUNTIME_LOCK.name)
    assert set(runtime_pins) == needed, (
        f"{RUNTIME_LOCK.name} pins packages no runtime dependency needs: "
        f"{sorted(set(runtime_pins) - needed)}; {REFRESH}"
    )


def test_the_runtime_lock_also_pins_what_the_images_python_needs(runtime_pins: dict[str, Pin]) -> None:
    # pip --require-hashes in the image refuses any dependency the lock does not pin.
    closure(top_level(), runtime_pins, RUNTIME_LOCK.name, python=BOOKWORM_PYTHON)


def test_every_dev_and_cli_dependency_and_what_it_pulls_in_is_pinned_and_nothing_else(
    dev_pins: dict[str, Pin],
) -> None:
    needed = closure(top_level(DEV_EXTRAS), dev_pins, DEV_LOCK.name)
    assert set(dev_pins) == needed, (
        f"{DEV_LOCK.name} pins packages nothing in pyproject.toml needs: "
        f"{sorted(set(dev_pins) - needed)}; {REFRESH}"
    )


def test_the_dev_lock_pins_every_runtime_package_exactly_as_the_images_do(
    runtime_pins: dict[str, Pin], dev_pins: dict[str, Pin]
) -> None:
    differ = {
        name: (str(pin.version), str(dev_pins[name].version) if name in dev_pins else None)
        for name, pin in runtime_pins.items()
        if name not in dev_pins or dev_pins[name] != pin
    }
    assert not differ, f"runtime lock vs dev lock (version, version): {differ}; {REFRESH}"


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda path: path.name)
def test_every_pin_carries_a_hash(lock: Path) -> None:
    pins = read_lock(lock)
    assert pins, f"{lock.name} pins nothing"
    unhashed = sorted(name for name, pin in pins.items() if not pin.hashes)
    assert not unhashed, f"{lock.name} pins without --hash (pip --require-hashes refuses them): {unhashed}"


def test_the_venv_has_exactly_the_versions_the_dev_lock_pins(dev_pins: dict[str, Pin]) -> None:
    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    differ = {
        name: (str(pin.version), installed(name))
        for name, pin in dev_pins.items()
        if installed(name) is None or Version(installed(name) or "0") != pin.version
    }
    assert not differ, (
        f"the venv differs from {DEV_LOCK.name} (pinned, installed): {differ}; "
        "rebuild it with `make clean` and `make .venv/.installed`"
    )

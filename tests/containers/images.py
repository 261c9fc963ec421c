"""Images for the container tier, built here without any registry.

The base is Debian bookworm from Debian's own packages (debootstrap, then `docker import`),
cached as a Docker image whose tag names what went into it. The one Lantern image, which all five
services run, comes from the project's Dockerfile with that base as BASE_IMAGE; the RabbitMQ and
PostgreSQL stand-ins from infra/Dockerfile.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = Path(__file__).resolve().parent / "infra"
CACHE_DIR = Path(os.environ.get("LANTERN_CACHE", Path.home() / ".cache" / "lantern"))

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Bump when the way the base is made changes, so a cached base of the old recipe is not reused.
BASE_RECIPE = "2"
MIRROR = os.environ.get("LANTERN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The host's trust store goes into the base, so that a build behind a TLS-inspecting proxy
# reaches PyPI and Debian as the host itself does.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
INFRA_IMAGE = "lantern-test-infra:bookworm"


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} … failed:\n{result.stderr[-3000:]}")
    return result


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def image_size_mb(ref: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", ref).stdout) / 1e6


def base_image_ref() -> str:
    """Names what went into the base: suite, packages, mirror and the host's trust store."""
    key = hashlib.sha256(
        "\n".join([BASE_RECIPE, SUITE, MIRROR, *BASE_PACKAGES]).encode()
        + (HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b"")
    ).hexdigest()[:12]
    return f"lantern-test-base:{SUITE}-{key}"


def base_image() -> str:
    """The debootstrapped base, built once and then taken from Docker's image store."""
    ref = base_image_ref()
    if image_exists(ref):
        return ref
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="rootfs-") as rootfs:
        out = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                rootfs,
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if out.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        # debootstrap leaves the packages it installed, and apt's lists, in the tree.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (Path(rootfs) / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        if HOST_CA_BUNDLE.exists():
            shutil.copyfile(HOST_CA_BUNDLE, Path(rootfs) / "etc/ssl/certs/ca-certificates.crt")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                "docker", "import",
                "--change", "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
                "-", ref,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        tar.wait()
        if imported.returncode != 0:
            raise AssertionError(f"docker import failed:\n{imported.stderr}")
    return ref


def build_lantern_image(base: str, ref: str, context: Path = REPO_ROOT) -> None:
    """The project's Dockerfile (its one image, every service's), tagged as the chart names it."""
    build_args = ["--build-arg", f"BASE_IMAGE={base}"]
    docker("build", "--quiet", *build_args, "--tag", ref, str(context), timeout=1200)


def build_infra_image(base: str) -> str:
    docker(
        "build",
        "--quiet",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--tag",
        INFRA_IMAGE,
        str(INFRA_DIR),
        timeout=900,
    )
    return INFRA_IMAGE

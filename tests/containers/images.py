"""Images for the container tier, built here without any registry.

The bases are Debian suites from Debian's own packages (debootstrap, then `docker import`),
each cached as a Docker image whose tag names what went into it. The one Lantern image, which all
five services run, comes from the project's Dockerfile on bookworm (its Python 3.11); the
RabbitMQ and PostgreSQL stand-ins from infra/Dockerfile on trixie, whose rabbitmq-server (4.0,
Erlang 27) and postgresql-17 are the majors the chart installs.
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

LANTERN_SUITE = "bookworm"
INFRA_SUITE = "trixie"
BASE_PACKAGES = {
    "bookworm": ("python3", "python3-venv", "ca-certificates"),
    "trixie": ("ca-certificates",),
}
# Bump when the way the base is made changes, so a cached base of the old recipe is not reused.
BASE_RECIPE = "2"
MIRROR = os.environ.get("LANTERN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The host's trust store goes into the base, so that a build behind a TLS-inspecting proxy
# reaches PyPI and Debian as the host itself does.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
INFRA_IMAGE = f"lantern-test-infra:{INFRA_SUITE}"


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} … failed:\n{result.stderr[-3000:]}")
    return result


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def image_size_mb(ref: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", ref).stdout) / 1e6


def base_image_ref(suite: str = LANTERN_SUITE) -> str:
    """Names what went into the base: suite, packages, mirror and the host's trust store."""
    key = hashlib.sha256(
        "\n".join([BASE_RECIPE, suite, MIRROR, *BASE_PACKAGES[suite]]).encode()
        + (HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b"")
    ).hexdigest()[:12]
    return f"lantern-test-base:{suite}-{key}"


def base_image(suite: str = LANTERN_SUITE) -> str:
    """The debootstrapped base, built once and then taken from Docker's image store."""
    ref = base_image_ref(suite)
    if image_exists(ref):
        return ref
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="rootfs-") as rootfs:
        out = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES[suite])}",
                suite,
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
    """The RabbitMQ and PostgreSQL stand-ins, on `base` (the trixie base)."""
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


def infra_versions(image: str) -> dict[str, str]:
    """What the stand-ins run, as their own tools say it."""
    otp = 'io:format("~s~n", [erlang:system_info(otp_release)]), halt().'
    rabbitmq = docker("run", "--rm", "--user", "rabbitmq", image, "rabbitmqctl", "version")
    erlang = docker("run", "--rm", "--user", "rabbitmq", image, "erl", "-noshell", "-eval", otp)
    postgres = docker("run", "--rm", "--user", "postgres", image, "postgres", "--version")
    return {
        "rabbitmq": f"{rabbitmq.stdout.strip()} (Erlang/OTP {erlang.stdout.strip()})",
        "postgres": postgres.stdout.strip(),
    }

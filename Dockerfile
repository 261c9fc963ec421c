# One Dockerfile, one target per service: gateway, orders, payments, bank, notifier.
#   docker build --target orders -t lantern-orders .
# All five share the same layers; only the CMD differs.
#
# BASE_IMAGE is any Debian bookworm image with python3 (3.11+) and its venv module: the
# official Python image by default, or, where no registry can be reached, a base built
# from Debian's own packages (tests/containers does that with debootstrap).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# --- builder: a virtualenv in /opt/venv ---------------------------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when
# the dependency list changes, not on every code edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Then the project itself, without touching the dependencies again. pip compiles
# the .pyc files here: at run time the root filesystem is read-only. pip and
# setuptools leave the venv: nothing installs packages at run time.
COPY apps/ apps/
RUN pip install --no-deps . \
    && python -m pip uninstall --yes pip setuptools

# --- runtime: no compilers, no pip cache, non-root ----------------------------
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=builder /opt/venv /opt/venv
WORKDIR /tmp
# Numeric, so Kubernetes can check runAsNonRoot without a passwd lookup.
USER 10001:10001

FROM runtime AS gateway
EXPOSE 8080
CMD ["python", "-m", "gateway"]

FROM runtime AS orders
EXPOSE 8001
CMD ["python", "-m", "orders"]

FROM runtime AS payments
EXPOSE 8002
CMD ["python", "-m", "payments"]

FROM runtime AS bank
EXPOSE 8003
CMD ["python", "-m", "bank"]

FROM runtime AS notifier
EXPOSE 8004
CMD ["python", "-m", "notifier"]

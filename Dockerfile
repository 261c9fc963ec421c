# One image for all five services (and any `lantern new-service` adds): each Deployment
# chooses its module, `python -m gateway`, `python -m orders`, ...
#   docker build -t lantern .
#   docker run lantern python -m orders
# Layers follow how often they change: the dependencies from requirements.lock (a venv that
# changes with the lock), then Lantern's code (a thin last layer that changes with every edit).
#
# BASE_IMAGE is any Debian bookworm image with python3 (3.11+) and its venv module: the
# official Python image by default, or, where no registry can be reached, a base built
# from Debian's own packages (tests/containers does that with debootstrap).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# --- builder: the dependencies in /opt/venv ----------------------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

# Exactly the lock's packages, each checked against its hash: an image built next month has
# today's. Rebuilt only when the lock changes. pip compiles their .pyc files here (the root
# filesystem is read-only at run time); pip and setuptools then leave the venv: nothing
# installs packages at run time.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes --no-deps -r /tmp/requirements.lock \
    && python -m pip uninstall --yes pip setuptools

# --- code: Lantern's packages, compiled --------------------------------------
# Not installed into the venv: on PYTHONPATH, so that an edit changes this layer alone.
# Timestamp-checked .pyc files: a file synced over one (the dev loop) is noticed and read.
FROM builder AS code
COPY apps/ /opt/lantern/apps/
RUN python -m compileall -q /opt/lantern/apps

# --- lantern: no compilers, no pip, non-root ---------------------------------
FROM ${BASE_IMAGE} AS lantern
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/lantern/apps \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
COPY --from=builder /opt/venv /opt/venv
# The last layer: the only one a code edit changes.
COPY --from=code /opt/lantern/apps /opt/lantern/apps
# Numeric, so Kubernetes can check runAsNonRoot without a passwd lookup.
USER 10001:10001
EXPOSE 8080 8001 8002 8003 8004
# Each Deployment sets its own command; without one the image runs the gateway.
CMD ["python", "-m", "gateway"]

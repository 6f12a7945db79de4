# Lethe operator image: `lethe run` as a non-root user on a read-only root filesystem.
#
#   docker build -t ghcr.io/lethe-io/lethe:0.1.0 .
#
# With no registry (scripts/image.sh, `make image`): a Debian bookworm base made
# locally with debootstrap (python3, python3-venv), host networking for pip, and
# the host's CA bundle passed as a BuildKit secret (used by pip, never stored in
# a layer):
#
#   DOCKER_BUILDKIT=1 docker build --network host --build-arg PYTHON_IMAGE=lethe-base:bookworm \
#     --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt -t lethe:dev .
#
# No `# syntax=` line: it would make BuildKit fetch a frontend image from a
# registry; the Docker daemon's built-in frontend (20.10+) reads this file.
#
# Dependencies are pinned by requirements.lock (used as a constraints file, so
# only the runtime dependencies of the package are built, at locked versions).
# Both stages install into a virtual environment under /opt: Debian's system
# Python refuses pip (externally managed), and the public python image is fine
# with a venv too, so one Dockerfile serves both bases.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: wheels for the package and its locked dependencies -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock ./
COPY pyproject.toml README.md* ./
COPY operator/ ./operator/
# The secret is optional: without it pip uses the base image's CA store.
# --use-pep517: sdists without pyproject.toml (pysyncobj) are built in an isolated
# setuptools environment; Debian's pip 23 would otherwise call `setup.py
# bdist_wheel`, which needs the `wheel` package the venv does not have.
RUN --mount=type=secret,id=cacert \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --use-pep517 --wheel-dir /wheels \
       --constraint requirements.lock .

# ---- runtime ----------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="lethe" \
      org.opencontainers.image.description="Retention for NFS and S3, as a Raft-replicated Kubernetes operator" \
      org.opencontainers.image.source="https://github.com/lethe-io/lethe" \
      org.opencontainers.image.licenses="Apache-2.0"

# Read-only root filesystem: no .pyc files at run time (they are compiled at
# install time instead), HOME and temp files under /tmp (an emptyDir in the
# chart), the Raft journal under /var/lib/lethe (a volume).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    LETHE_DATA_DIR=/var/lib/lethe \
    PATH=/opt/lethe/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# --no-index: install exactly the wheels built above, nothing from the network.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/lethe \
    && /opt/lethe/bin/pip install --no-index --find-links /wheels --compile lethe \
    && groupadd --system --gid 65532 lethe \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin lethe \
    && install -d -o 65532 -g 65532 -m 0750 /var/lib/lethe

USER 65532:65532
WORKDIR /tmp
# 7000: Raft (peers only), 8080: /healthz /readyz /raft /metrics
EXPOSE 7000 8080
VOLUME ["/var/lib/lethe"]
ENTRYPOINT ["lethe", "run"]

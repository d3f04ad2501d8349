# Flower's SuperLink, SuperNode and SuperExec images, built locally for machines that cannot pull
# flwr/superlink, flwr/supernode and flwr/superexec from a registry. Same layout as Flower's own
# images (a venv at /python/venv with flwr, user `app` with uid 49999, working directory /app),
# so docker-compose.yml and Dockerfile work on either:
#   docker build -f docker/flower.Dockerfile --target superlink -t keco-flwr/superlink:1.41.0 .
# (targets superlink, supernode, superexec). DEBIAN_IMAGE is any Debian bookworm image: the
# registry's debian:bookworm-slim, or one made without a registry by `docker/engine.sh
# debian-base`. docker/pip/constraints.txt, when present, pins the versions of flwr's
# dependencies to those of the project's .venv.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE} AS base
ARG FLWR_VERSION=1.41.0

RUN dpkg -s python3-venv ca-certificates libsqlite3-0 >/dev/null 2>&1 \
    || (apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
           python3 python3-venv ca-certificates libsqlite3-0 \
        && rm -rf /var/lib/apt/lists/*)

# docker/pip is mounted for this step only (nothing of it stays in the image)
RUN --mount=type=bind,source=docker/pip,target=/tmp/pip \
    if [ -f /tmp/pip/constraints.txt ]; then export PIP_CONSTRAINT=/tmp/pip/constraints.txt; fi \
    && python3 -m venv /python/venv \
    && /python/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       "flwr==${FLWR_VERSION}" \
    && useradd --uid 49999 --user-group --home-dir /app --no-create-home --shell /bin/sh app \
    && mkdir -p /app && chown -R app:app /app /python/venv

ENV PATH=/python/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONIOENCODING=UTF-8 \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    HOME=/app
WORKDIR /app
USER app

FROM base AS superlink
ENTRYPOINT ["flower-superlink"]

FROM base AS supernode
ENTRYPOINT ["flower-supernode"]

FROM base AS superexec
ENTRYPOINT ["flower-superexec"]

# The app image of the SuperExec services in docker-compose.yml (the ServerApp and the ClientApps):
# Flower's SuperExec image plus this project's dependencies. The app's code reaches the SuperExecs
# as a FAB with every `flwr run`; certificates and keys are mounted at run time, never built in
# (.dockerignore keeps them out of the build context).
#   docker compose build     (or: docker build -t keco-flower-superexec:1.41.0 .)
# BASE_IMAGE is Flower's SuperExec image from the registry; without a registry it is the same
# Flower version built locally from docker/flower.Dockerfile (`python -m experiments.compose`
# does that when it cannot pull).
ARG FLWR_VERSION=1.41.0
ARG BASE_IMAGE=flwr/superexec:${FLWR_VERSION}
FROM ${BASE_IMAGE}

WORKDIR /app

# torch first, pinned to the CPU build: an unpinned torch pulls several GB of CUDA wheels. A CPU
# wheel for the image's Python in docker/pip/ (`pip download torch==2.13.0+cpu --no-deps -d
# docker/pip` where pip finds one) is installed as it is; otherwise the CPU index is asked.
# docker/pip/constraints.txt, when present, pins every other dependency to the .venv's version.
RUN --mount=type=bind,source=docker/pip,target=/tmp/pip \
    if [ -f /tmp/pip/constraints.txt ]; then export PIP_CONSTRAINT=/tmp/pip/constraints.txt; fi \
    && py=$(python -c 'import sys; print("cp%d%d" % sys.version_info[:2])') \
    && wheel=$(ls /tmp/pip/torch-2.13.0+cpu-${py}-*.whl 2>/dev/null | head -n 1) \
    && if [ -n "$wheel" ]; then \
           python -m pip install --no-cache-dir "$wheel"; \
       else \
           python -m pip install --no-cache-dir "torch==2.13.0" \
               --index-url https://download.pytorch.org/whl/cpu; \
       fi

# the project and the rest of its dependencies; the base image already has flwr (without Ray),
# so the flwr[simulation] requirement is dropped as in Flower's own compose files
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app common ./common
COPY --chown=app:app server ./server
COPY --chown=app:app client ./client
COPY --chown=app:app experiments ./experiments
COPY --chown=app:app conf ./conf
RUN --mount=type=bind,source=docker/pip,target=/tmp/pip \
    sed -i 's/.*flwr\[simulation\].*//' pyproject.toml \
    && if [ -f /tmp/pip/constraints.txt ]; then \
           grep -v -i -E '^(torch|ray|flwr)==' /tmp/pip/constraints.txt > /tmp/constraints.txt; \
           export PIP_CONSTRAINT=/tmp/constraints.txt; \
       fi \
    && python -m pip install --no-cache-dir . \
    && rm -f /tmp/constraints.txt

ENTRYPOINT ["flower-superexec"]

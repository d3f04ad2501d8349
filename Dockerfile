# The app image of the SuperExec services in docker-compose.yml (the ServerApp and the ClientApps):
# Flower's SuperExec image plus this project's dependencies. The app's code reaches the SuperExecs
# as a FAB with every `flwr run`; certificates and keys are mounted at run time, never built in
# (.dockerignore keeps them out of the build context).
#   docker compose build     (or: docker build -t keco-flower-superexec:1.41.0 .)
ARG FLWR_VERSION=1.41.0
FROM flwr/superexec:${FLWR_VERSION}

WORKDIR /app

# torch first, pinned to the CPU build: an unpinned torch pulls several GB of CUDA wheels
RUN python -m pip install --no-cache-dir "torch==2.13.0" \
        --index-url https://download.pytorch.org/whl/cpu

# the project and the rest of its dependencies; the base image already has flwr (without Ray),
# so the flwr[simulation] requirement is dropped as in Flower's own compose files
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app common ./common
COPY --chown=app:app server ./server
COPY --chown=app:app client ./client
COPY --chown=app:app experiments ./experiments
COPY --chown=app:app conf ./conf
RUN sed -i 's/.*flwr\[simulation\].*//' pyproject.toml \
    && python -m pip install --no-cache-dir .

ENTRYPOINT ["flower-superexec"]

"""Flower ServerApp running KECO (or FedAvg) over the clients.

``server.app:app`` reads the run config from Flower's run config (``flwr run .``) and prepares
the run directory (keys generated in a separate process, teacher) if needed;
:func:`build_server_app` binds a typed config (the Hydra-driven Ray simulation).

In a deployment (``python -m experiments.deploy``, docker-compose) the run directory is
provisioned by the key owner with ``public.ctx`` (and the teacher) only, marked by
``provisioned.json``: the ServerApp then generates nothing and refuses to start if the secret
context is there or the public one is missing (:func:`common.fed.prepare.ensure_keys`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.fed.prepare import prepare_run_dir
from common.fed.settings import FederatedRunConfig, federated_from_run_config
from server.run import run_server


def build_server_app(
    cfg: FederatedRunConfig | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> ServerApp:
    """A ServerApp bound to ``cfg`` (or reading it from Flower's run config when ``None``);
    ``on_round`` receives each round's metrics row (experiment tracking in a simulation)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_cfg = cfg
        if run_cfg is None:
            run_cfg = federated_from_run_config(context.run_config)
            prepare_run_dir(run_cfg)
        run_server(grid, run_cfg, on_round)

    return app


app = build_server_app()

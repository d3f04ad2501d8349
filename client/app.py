"""Flower ClientApp: each node is one group of MEC devices training the distilled student.

``client.app:app`` reads the run config from Flower's run config (``flwr run .``);
:func:`build_client_app` binds a typed config instead (the Hydra-driven Ray simulation).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.device import Device
from common.config import FederatedRunConfig, federated_from_run_config

_devices: dict[tuple[FederatedRunConfig, int], Device] = {}


@functools.lru_cache(maxsize=8)
def _parsed(run_config: tuple[tuple[str, object], ...]) -> FederatedRunConfig:
    """Flower's run config, composed once per distinct run config (not per message)."""
    return federated_from_run_config(dict(run_config))


def _device(cfg: FederatedRunConfig | None, context: Context) -> Device:
    cfg = cfg or _parsed(tuple(sorted(context.run_config.items())))
    pid = int(context.node_config["partition-id"])
    key = (cfg, pid)  # a different run config in the same process gets its own device
    if key not in _devices:
        torch.set_num_threads(1)  # many clients share few cores
        state_dir = Path(str(context.node_config.get("state-dir", Path(cfg.run_dir) / "clients")))
        _devices[key] = Device(cfg, pid, state_dir)
    return _devices[key]


def build_client_app(cfg: FederatedRunConfig | None = None) -> ClientApp:
    """A ClientApp bound to ``cfg`` (or reading it from Flower's run config when ``None``)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return Message(_device(cfg, context).train(msg), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(_device(cfg, context).evaluate(msg), reply_to=msg)

    return app


app = build_client_app()

"""Flower ClientApp: each node is one group of MEC devices training the distilled student.

``client.app:app`` reads the run config from Flower's run config (``flwr run .``);
:func:`build_client_app` binds a typed config instead (the Hydra-driven Ray simulation).

A SuperNode describes itself in its node config (``flower-supernode --node-config``):

* ``partition-id`` (required): which device group this node is (its non-IID profile);
* ``state-dir``: where the node keeps its local state between rounds
  (default ``<client-dir>/states``, the simulation's shared directory);
* ``secret-context``: the node's provisioned CKKS secret context (default
  ``<client-dir>/secret.ctx``: the simulated clients' side, never the server's run directory);
* ``teacher``: the provisioned teacher file (default ``<client-dir>/teacher.pt``);
* ``fault-at-round``: fault injection (``experiments.deploy raise_in_client_at_round``): the
  ClientApp raises in that round's train instruction, as a crashing app would.

A deployed SuperNode names all three.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.device import Device
from common.config import ConfigError
from common.fed.settings import FederatedRunConfig, federated_from_run_config
from common.protocol import CONFIG, SERVER_ROUND_KEY

NODE_PARTITION = "partition-id"
NODE_STATE_DIR = "state-dir"
NODE_SECRET_CONTEXT = "secret-context"
NODE_TEACHER = "teacher"
NODE_FAULT = "fault-at-round"


class InjectedFault(RuntimeError):
    """The ClientApp's own crash, asked for by the node config (``fault-at-round``)."""


_devices: dict[tuple[FederatedRunConfig, int], Device] = {}


@functools.lru_cache(maxsize=8)
def _parsed(run_config: tuple[tuple[str, object], ...]) -> FederatedRunConfig:
    """Flower's run config, composed once per distinct run config (not per message)."""
    return federated_from_run_config(dict(run_config))


def _node_file(context: Context, key: str) -> Path | None:
    """A file named by the node config, which must exist when it is given."""
    value = context.node_config.get(key)
    if value is None or str(value) == "":
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"node config {key}={str(value)!r}: no such file on this SuperNode")
    return path


def node_settings(
    context: Context, cfg: FederatedRunConfig
) -> tuple[int, Path, Path | None, Path | None]:
    """``(partition id, state dir, secret context, teacher)`` from the SuperNode's node config."""
    if NODE_PARTITION not in context.node_config:
        raise ConfigError(
            f"the SuperNode has no {NODE_PARTITION!r} in its node config; start it with "
            f"--node-config 'partition-id=<i> ...'"
        )
    try:
        pid = int(context.node_config[NODE_PARTITION])
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"node config {NODE_PARTITION} must be an integer, got "
            f"{context.node_config[NODE_PARTITION]!r}"
        ) from err
    if pid < 0:
        raise ConfigError(f"node config {NODE_PARTITION} must be >= 0, got {pid}")
    state_dir = Path(str(context.node_config.get(NODE_STATE_DIR, cfg.states_dir)))
    return (
        pid,
        state_dir,
        _node_file(context, NODE_SECRET_CONTEXT),
        _node_file(context, NODE_TEACHER),
    )


def _device(cfg: FederatedRunConfig | None, context: Context) -> Device:
    cfg = cfg or _parsed(tuple(sorted(context.run_config.items())))
    pid, state_dir, secret_context, teacher = node_settings(context, cfg)
    key = (cfg, pid)  # a different run config in the same process gets its own device
    if key not in _devices:
        torch.set_num_threads(1)  # many clients share few cores
        _devices[key] = Device(
            cfg, pid, state_dir, secret_context=secret_context, teacher_path=teacher
        )
    return _devices[key]


def _inject_fault(msg: Message, context: Context) -> None:
    """Raise :class:`InjectedFault` in the round the node config names (``fault-at-round``)."""
    at = context.node_config.get(NODE_FAULT)
    if at is None or str(at) == "":
        return
    config = msg.content.config_records.get(CONFIG, {})
    if str(config.get(SERVER_ROUND_KEY)) == str(at):
        raise InjectedFault(f"fault injected by the node config: {NODE_FAULT}={at}")


def build_client_app(cfg: FederatedRunConfig | None = None) -> ClientApp:
    """A ClientApp bound to ``cfg`` (or reading it from Flower's run config when ``None``)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        _inject_fault(msg, context)
        return Message(_device(cfg, context).train(msg), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(_device(cfg, context).evaluate(msg), reply_to=msg)

    return app


app = build_client_app()

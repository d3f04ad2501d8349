"""What the ServerApp does: build the strategy from the run config and run the rounds.

The server loads only the public CKKS context. After the rounds, ``<run_dir>/server.json``
holds the per-round history and ``<run_dir>/checkpoint`` the final global arrays (the encrypted
sums under KECO; only a holder of the secret context can read the model out of them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from common.crypto import PUBLIC_CONTEXT_FILE, make_backend
from common.distill import schedule_value
from common.fed import distill_global, initial_weights, knowledge_shape
from common.fed.settings import PLAINTEXT_STRATEGIES, FederatedRunConfig
from common.protocol import (
    ARRAYS,
    CONFIG,
    DEADLINE_KEY,
    DELTA_KEY,
    EVAL_METRICS,
    NUM_EXAMPLES_KEY,
    STUDENT_KEY,
    SUMMED_METRICS,
    TEMPERATURE_KEY,
    TRAIN_ACCURACY_KEY,
    TRAIN_LOSS_KEY,
    GlobalSums,
    initial_arrays,
    initial_sums,
    read_global,
)
from server.fedavg import DeadlineFedAvg
from server.fedmeta2ag import FedMeta2Ag
from server.loop import run_rounds
from server.strategy import Keco


def initial_model(cfg: FederatedRunConfig) -> tuple[np.ndarray, np.ndarray]:
    """W_0 (the seeded student initialisation) and G_0 (zeros: no soft-label knowledge yet).

    Under ``feddistill`` no weights are exchanged: W_0 is empty and each client starts from
    its own copy of the seeded initialisation.
    """
    w0 = np.zeros(0) if cfg.strategy.name == "feddistill" else initial_weights(cfg)
    return w0, np.zeros(knowledge_shape(cfg))


def train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Flower's weighted mean of the clients' train metrics, except the budget counters
    (:data:`common.protocol.SUMMED_METRICS`), which are summed over the clients."""
    summed = {key: 0.0 for key in SUMMED_METRICS}
    for record in records:
        for metrics in record.metric_records.values():
            for key in SUMMED_METRICS:
                summed[key] += float(metrics.get(key, 0.0))
    out = aggregate_metricrecords(records, weight_key)
    out.update({key: value for key, value in summed.items() if value})
    return out


def build_strategy(cfg: FederatedRunConfig) -> tuple[Strategy, ArrayRecord]:
    """The strategy of ``cfg.strategy.name`` and its initial arrays."""
    fed, st = cfg.federation, cfg.strategy
    w0, g0 = initial_model(cfg)
    n_train = max(1, math.ceil(fed.available * fed.fraction_train))
    n_eval = max(1, math.ceil(fed.available * fed.fraction_evaluate))
    deadline = math.inf if st.deadline_s is None else st.deadline_s
    common = dict(
        fraction_train=fed.fraction_train, fraction_evaluate=fed.fraction_evaluate,
        min_train_nodes=n_train, min_evaluate_nodes=n_eval, min_available_nodes=fed.available,
        uplink_mbps=fed.uplink_mbps,
    )  # fmt: skip
    if st.name in PLAINTEXT_STRATEGIES:
        plain = dict(
            common, weighted_by_key=NUM_EXAMPLES_KEY, arrayrecord_key=ARRAYS,
            configrecord_key=CONFIG, train_metrics_aggr_fn=train_metrics, deadline_s=deadline,
        )  # fmt: skip
        if st.name == "fedmeta2ag":
            strategy = FedMeta2Ag(**plain, expected_length=len(w0))
        else:
            strategy = DeadlineFedAvg(**plain)
        return strategy, ArrayRecord({STUDENT_KEY: Array(w0.astype(np.float32))})
    backend = make_backend(cfg.he, Path(cfg.run_dir) / PUBLIC_CONTEXT_FILE)
    hook = None
    if st.server_distill:  # he=off: the server can read the model and do KECO's steps 5-6

        def hook(sums: GlobalSums, server_round: int) -> GlobalSums:
            w, g = read_global(backend, sums, len(w0), g0.shape[1], g0.shape[0])
            w = distill_global(cfg, w, g, server_round)
            # Δ is folded into g: one term, total s
            return initial_sums(backend, w, g, st.local.buffer_size)

    strategy = Keco(
        backend, len(w0), g0.shape[1], g0.shape[0],
        delta=lambda r: schedule_value(st.delta, r - 1), temperature=st.temperature,
        deadline_s=deadline, correction=st.correction, min_replies=fed.min_replies,
        after_aggregate=hook, max_examples=st.local.buffer_size, max_uploads=fed.num_clients,
        **common,
    )  # fmt: skip
    arrays = ArrayRecord({k: Array(v) for k, v in initial_arrays(w0, g0).items()})
    return strategy, arrays


def _row(server_round: int, train: dict[str, Any], evaluate: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"train_loss": train.get(TRAIN_LOSS_KEY)}
    for key in (
        "set_x", "set_u", "set_v", "set_late", "rejected", "failed", TRAIN_ACCURACY_KEY,
        "edge_servers", "delta_formed", "sim_seconds", "values_up", *SUMMED_METRICS,
    ):  # fmt: skip
        if key in train:
            row[key] = train[key]
    for key in EVAL_METRICS:
        if key in evaluate:
            row[f"eval_{key}"] = evaluate[key]
    return row


def run_server(
    grid: Grid, cfg: FederatedRunConfig, on_round: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Run all rounds (resuming from the checkpoint if asked); returns the per-round history.
    ``on_round(row)`` receives each round's metrics row (see :func:`server.loop.run_rounds`)."""
    run_dir = Path(cfg.run_dir)
    strategy, arrays = build_strategy(cfg)
    st = cfg.strategy
    fedavg_config = None
    if st.name in PLAINTEXT_STRATEGIES:  # their clients read δ_t and T from the config record

        def fedavg_config(r: int) -> ConfigRecord:
            return ConfigRecord(
                {
                    DELTA_KEY: schedule_value(st.delta, r - 1),
                    TEMPERATURE_KEY: st.temperature,
                    DEADLINE_KEY: math.inf if st.deadline_s is None else st.deadline_s,
                }
            )

    _, history = run_rounds(
        strategy, grid, arrays, num_rounds=cfg.federation.rounds, seed=cfg.seed,
        run_dir=run_dir, resume=cfg.resume, timeout_s=cfg.federation.timeout_s,
        train_config=fedavg_config, summarize=_row, on_round=on_round,
    )  # fmt: skip
    (run_dir / "server.json").write_text(json.dumps({"rounds": history}, indent=1))
    return history

"""The KECO strategy driven through Flower's simulation runtime with real encrypted replies."""

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from common.crypto import make_backend
from common.protocol import (
    CONFIG,
    METRICS,
    ROLE_FRESH,
    ROLE_ON_TIME,
    GlobalSums,
    RoundSettings,
    build_upload,
    initial_arrays,
    read_global,
)
from server.strategy import Keco

MODEL_LENGTH, NUM_CLASSES, NODES = 50, 3, 3


def _client_app(cfg, secret_path) -> ClientApp:
    """Node k adds k+1 to W and k to G, weight n = 10(k+1); node 2 is late (fresh) in round 2."""
    app = ClientApp()

    def read(msg: Message):
        backend = make_backend(cfg, secret_path)
        configs = {name: dict(record) for name, record in msg.content.config_records.items()}
        settings = RoundSettings.from_config(configs[CONFIG])
        model, soft = read_global(
            backend, GlobalSums.from_records(configs), settings.model_length, settings.num_classes
        )
        return backend, settings, model, soft

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        backend, settings, model, soft = read(msg)
        k = int(context.node_config["partition-id"])
        late = k == 2 and settings.server_round == 2
        role = ROLE_FRESH if late else ROLE_ON_TIME
        upload = build_upload(
            backend,
            role,
            10 * (k + 1),
            soft + k,
            None if late else model + (k + 1),
            settings.server_round,
        )
        records = {name: ConfigRecord(r) for name, r in upload.to_records().items()}
        records[METRICS] = MetricRecord({"train_loss": float(k)})
        return Message(RecordDict(records), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        _, _, model, _ = read(msg)
        k = int(context.node_config["partition-id"])
        metrics = MetricRecord({"tasks": 10 + k, "qoe": float(model.mean())})
        return Message(RecordDict({METRICS: metrics}), reply_to=msg)

    return app


def _server_app(cfg, public_path, model0, soft0, out_path) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = Keco(
            make_backend(cfg, public_path),
            MODEL_LENGTH,
            NUM_CLASSES,
            delta=lambda r: 1.0 / r,
            min_train_nodes=NODES,
            min_evaluate_nodes=NODES,
            min_available_nodes=NODES,
        )
        initial = ArrayRecord({k: Array(v) for k, v in initial_arrays(model0, soft0).items()})
        result = strategy.start(grid, initial, num_rounds=2)
        sums = strategy.sums_from_arrays(result.arrays)
        out = {
            "sums": {
                name: {**r, "chunks": [c.hex() for c in r["chunks"]]}
                for name, r in sums.to_records().items()
            },  # fmt: skip
            "train": {r: dict(m) for r, m in result.train_metrics_clientapp.items()},
            "evaluate": {r: dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
        }
        out_path.write_text(json.dumps(out))

    return app


@pytest.mark.slow
def test_two_rounds_through_flower_simulation(keys, tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    cfg, secret_path, public_path = keys("ckks4096")
    rng = np.random.default_rng(0)
    model0, soft0 = rng.normal(size=MODEL_LENGTH), rng.normal(size=(NUM_CLASSES, NUM_CLASSES))
    out_path = tmp_path / "result.json"

    run_simulation(
        server_app=_server_app(cfg, public_path, model0, soft0, out_path),
        client_app=_client_app(cfg, secret_path),
        num_supernodes=NODES,
        backend_config={
            "client_resources": {"num_cpus": 1},
            "init_args": {"num_cpus": 2, "address": "local"},  # a Ray of its own
        },
    )

    out = json.loads(out_path.read_text())
    records = {
        name: {**r, "chunks": [bytes.fromhex(c) for c in r["chunks"]]}
        for name, r in out["sums"].items()
    }
    model, soft = read_global(
        make_backend(cfg, secret_path), GlobalSums.from_records(records), MODEL_LENGTH, NUM_CLASSES
    )
    # Round 1: all on time, n = 10, 20, 30. Round 2: nodes 0, 1 on time, node 2 fresh-late.
    model1 = model0 + (10 * 1 + 20 * 2 + 30 * 3) / 60
    soft1 = soft0 + (20 * 1 + 30 * 2) / 60
    model2 = model1 + (10 * 1 + 20 * 2) / 30
    soft2 = soft1 + (20 * 1) / 30  # set u empty: Δ needs stale and fresh logits, so none
    assert np.max(np.abs(model - model2)) <= 1e-5
    assert np.max(np.abs(soft - soft2)) <= 1e-5
    round2 = out["train"]["2"]
    assert (round2["set_x"], round2["set_u"], round2["set_v"], round2["rejected"]) == (2, 0, 1, 0)
    assert round2["bytes_up"] > 0 and round2["bytes_down"] > 0
    evaluate2 = out["evaluate"]["2"]
    assert evaluate2["tasks"] == 33
    assert evaluate2["qoe"] == pytest.approx(model2.mean(), abs=1e-5)

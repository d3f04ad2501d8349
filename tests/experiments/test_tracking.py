"""Experiment tracking (``logger=csv|tensorboard|wandb``): the real backends' files, read back.

The unit tests drive the trackers with hand-made rows; the slow test runs the real entry point
with ``logger=wandb`` (offline) and reads the run's records back (``logger=tensorboard`` end to
end is checked by ``test_logs.py``'s demo-like run)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import MissingConfigException
from matplotlib import pyplot as plt

from common.config import ConfigError, compose
from experiments import tracking
from experiments.run import optimized_metric
from experiments.tracking import logger_from_dict

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    {"round": 1, "train_loss": 1.5, "eval_qoe": 20.0, "eval_drop_ratio": 0.3, "set_x": 2,
     "set_u": 0, "set_v": 1, "bytes_up": 1000, "bytes_down": 2000, "seconds": 3.5},
    {"round": 2, "train_loss": 1.2, "eval_qoe": 25.0, "eval_drop_ratio": 0.2, "set_x": 3,
     "set_u": 0, "set_v": 0, "bytes_up": 1100, "bytes_down": 2100, "seconds": 3.1},
]  # fmt: skip
RESULTS = {
    "rounds": ROWS,
    "policies": {
        "student": {"qoe": 30.5, "drop_ratio": 0.05, "params": 8455, "note": "text is skipped"},
        "random": {"qoe": 25.2, "drop_ratio": 0.19},
    },
    "summary": {"final_qoe": 30.5, "beats": {"random": True}, "bytes_up_total": 2100},
}


def tensorboard_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def wandb_records(run_file: Path) -> list:
    """Records of an offline ``run-*.wandb`` file (LevelDB log format: 32 KiB blocks of
    checksum, length, type chunks after a 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
        elif kind == 0:
            break
    return out


def wandb_history(records) -> list[dict]:
    rows = []
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in rec.history.item})  # fmt: skip
    return rows


def test_scalars_keep_finite_numbers_only():
    row = {"a": 1, "b": 2.5, "c": True, "d": "x", "e": float("nan"), "f": [1], "g": np.ones(3)}
    assert tracking.scalars(row) == {"a": 1.0, "b": 2.5, "c": 1.0}


def test_bad_logger_fails_with_the_valid_names():
    with pytest.raises(ConfigError, match=r"logger.name must be one of \['csv', 'tensorboard'"):
        logger_from_dict({"name": "mlflow"})
    with pytest.raises(ConfigError, match="logger.mode must be one of"):
        logger_from_dict({"name": "wandb", "mode": "sometimes"})
    with pytest.raises(MissingConfigException, match="logger/mlflow"):
        compose(["experiment=federation", "logger=mlflow"])
    assert compose(["experiment=federation"]).logger.name == "csv"


def test_optimized_metric_reads_a_dotted_number():
    assert optimized_metric(RESULTS, "summary.final_qoe") == 30.5
    with pytest.raises(ConfigError, match="no 'final' there; keys at that level"):
        optimized_metric(RESULTS, "summary.final")
    with pytest.raises(ConfigError, match="is not a number"):
        optimized_metric(RESULTS, "summary.beats")


def _figure(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2], [3, 4])
    fig.savefig(path)
    plt.close(fig)


def test_csv_tracker_writes_rounds_policies_and_the_sweep_line(tmp_path):
    sweep = tmp_path / "sweep"
    job = tracking.JobInfo("federation", sweep / "3", sweep, 3, ("seed=1", "he=off"))
    with tracking.start({"name": "csv"}, job) as tracker:
        assert tracking.active() is tracker
        tracker.log_round(ROWS[0])  # streamed by the server loop
        tracker.log_results(RESULTS)  # the end: round 1 is not written twice
    assert tracking.active() is None
    with (job.run_dir / "rounds.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["eval_qoe"]) for r in rows] == [20.0, 25.0]
    with (job.run_dir / "policies.csv").open() as f:
        policies = {r["policy"]: r for r in csv.DictReader(f)}
    assert float(policies["student"]["params"]) == 8455 and policies["random"]["params"] == ""
    assert "note" not in policies["student"]
    (line,) = (sweep / "jobs.jsonl").read_text().splitlines()
    assert json.loads(line) == {
        "job": 3, "overrides": ["seed=1", "he=off"], "run_dir": str(job.run_dir),
        "summary": {"final_qoe": 30.5, "bytes_up_total": 2100.0},
    }  # fmt: skip


def test_tensorboard_tracker_event_files(tmp_path):
    job = tracking.JobInfo("federation", tmp_path, overrides=("strategy.temperature=3",))
    _figure(tmp_path / "rounds_qoe.png")
    with tracking.start({"name": "tensorboard"}, job) as tracker:
        tracker.log_results(RESULTS)
    acc = tensorboard_events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in acc.Scalars("round/eval_qoe")] == [(1, 20.0), (2, 25.0)]
    for key in ("train_loss", "eval_drop_ratio", "set_x", "set_v", "bytes_up", "seconds"):
        assert len(acc.Scalars(f"round/{key}")) == 2
    assert acc.Scalars("policy/student/qoe")[0].value == pytest.approx(30.5)
    assert "figures/rounds_qoe" in acc.Tags()["images"]
    assert "policies/text_summary" in acc.Tags()["tensors"]


def test_wandb_tracker_offline_run_grouped_by_sweep(tmp_path):
    sweep = tmp_path / "multirun"
    job = tracking.JobInfo("federation", sweep / "1", sweep, 1, ("seed=1",))
    with tracking.start({"name": "wandb"}, job, {"seed": 1}) as tracker:
        assert tracker.run.settings.mode == "offline"
        tracker.log_results(RESULTS)
    (run_file,) = (job.run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_group == "federation-multirun" and run.display_name == "federation-1 seed=1"
    history = [h for h in wandb_history(records) if "round/eval_qoe" in h]
    assert [(h["round"], h["round/eval_qoe"]) for h in history] == [(1, 20.0), (2, 25.0)]
    assert any("policies/nrows" in h for h in wandb_history(records))  # the table


def test_wandb_needs_no_login(tmp_path, monkeypatch):
    """Offline mode never asks for an API key (none is set here)."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    job = tracking.JobInfo("federation", tmp_path)
    with tracking.start({"name": "wandb"}, job) as tracker:
        tracker.log_round(ROWS[0])
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_federation_run_with_logger_wandb_writes_an_offline_run(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}
    env.pop("WANDB_API_KEY", None)
    r = subprocess.run(
        [sys.executable, "-m", "experiments.run", "experiment=federation", "debug=smoke",
         "scenario=qeco", "scenario.n_devices=8", "scenario.n_slots=30", "model=mlp",
         "model.hidden=[32]", "logger=wandb", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history = [h for h in wandb_history(wandb_records(run_file)) if "round/eval_qoe" in h]
    assert [h["round/eval_qoe"] for h in history] == [r["eval_qoe"] for r in results["rounds"]]
    assert [h["round/bytes_up"] for h in history] == [r["bytes_up"] for r in results["rounds"]]
    assert "wandb" not in r.stdout.lower()  # no banner: one line per event

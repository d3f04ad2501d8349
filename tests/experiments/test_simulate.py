"""The simulator CLI and the simulator benchmark, run as a user would."""

import json
import os
import subprocess
import sys
from pathlib import Path

from experiments.bench import main as bench_main

ROOT = Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.simulate", *args],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip


def test_simulate_prints_metrics_json():
    r = cli("scenario=tang2020", "policy=all_local", "episodes=4", "seed=1", "scenario.n_devices=8")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["scenario"] == "tang2020" and out["policy"] == "all_local"
    for key in ("qoe", "qoe_episode", "delay", "delay_completed", "drop_ratio", "energy_local",
                "energy_tx", "energy_idle", "energy_edge", "energy_total", "offload_failures",
                "throughput", "tasks", "slots_per_s"):  # fmt: skip
        assert key in out
    assert out["episodes"] == 4 and out["offload_ratio"] == 0.0
    assert 0.0 < out["drop_ratio"] < 1.0


def test_simulate_bad_config_fails_before_work():
    r = cli("scenario=qeco", "policy=random", "scenario.rate_mbps=-2")
    assert r.returncode == 2 and "scenario.rate_mbps" in r.stderr
    r = cli("policy=psychic")
    assert r.returncode == 2 and "valid policies are" in r.stderr
    r = cli("scenario=atlantis")
    assert r.returncode != 0 and "tang2020" in r.stderr  # Hydra lists the presets


def test_simulator_bench_reports_speed(capsys):
    out = bench_main(["suite=simulator", "episodes=4", "batch=4", "policies=[all_local,random]"])
    assert out["all_local"]["slots_per_s"] > 0 and out["random"]["decisions_per_s"] > 0
    assert "| all_local |" in out["table"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 4

"""Sweeps beyond one machine: Hydra's Ray launcher against a Ray head this test starts (loopback
only) and stops by its process group, and Hydra's Optuna sweeper over KECO's knobs."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from common.config import compose
from experiments.deploy_lib.procs import Processes, free_port, wait_for
from experiments.sweeps import planned_jobs

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "experiment=federation", "debug=smoke", "scenario=qeco", "scenario.n_devices=8",
    "scenario.n_slots=30", "model=mlp", "model.hidden=[32]", "he=off",
]  # fmt: skip
# Ray on loopback: without this Ray replaces 127.0.0.1 by the machine's outward address
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0", **LOOPBACK}


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args], cwd=ROOT, env=ENV, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def test_planned_jobs_counts_the_sweep():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from common.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose("config", [], return_hydra_config=True)
        cfg.hydra.overrides.task = ["seed=0,1,2", "he=ckks,off"]
        assert planned_jobs(cfg) == 6
        cfg.hydra.overrides.task = ["seed=range(4)"]
        assert planned_jobs(cfg) == 4
        optuna = hydra_compose(
            "config", ["experiment=federation", "hparams_search=keco_optuna"],
            return_hydra_config=True,
        )  # fmt: skip
        assert planned_jobs(optuna) == 20


def test_hparams_search_config_tunes_the_keco_knobs():
    cfg = compose(["experiment=federation", "hparams_search=keco_optuna"])
    assert cfg.optimized_metric == "summary.final_qoe"
    with pytest.raises(Exception, match="hparams_search/nope"):
        compose(["experiment=federation", "hparams_search=nope"])


@pytest.mark.slow
def test_ray_launcher_runs_the_sweep_on_a_local_head(tmp_path):
    # a private, short temp dir: Ray's socket paths must stay short, and its "current cluster"
    # file must not land in /tmp/ray where every other ray.init() on the machine would find it
    ray_tmp = Path(tempfile.mkdtemp(prefix="kr-", dir="/tmp"))
    port, client_port, agent_port = free_port(), free_port(), free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    head_argv = [
        ray, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
        "--num-cpus=2", '--resources={"sweep_slots": 1}', "--include-dashboard=false",
        "--disable-usage-stats", f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={agent_port}", f"--temp-dir={ray_tmp}",
    ]  # fmt: skip
    sweep = tmp_path / "sweep"

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        with Processes(tmp_path / "logs", env=LOOPBACK) as procs:
            head = procs.start("ray-head", head_argv)
            wait_for("the Ray head", listening, 120, watch=[head])
            r = run(
                "-m", *TINY, "seed=0,1", "hydra/launcher=ray_cluster",
                f"hydra.launcher.ray.init.address=127.0.0.1:{port}", f"hydra.sweep.dir={sweep}",
            )  # fmt: skip
        assert procs.alive_groups() == []  # the head and every Ray process it started are gone
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "Ray Launcher is launching 2 jobs" in r.stdout
    assert "(_run_job pid=" in r.stdout  # the jobs ran in Ray workers of that cluster
    assert "A worker died" not in r.stdout  # Flower left the job's Ray connection open
    a, b = results(sweep / "0"), results(sweep / "1")
    assert (a["config"]["seed"], b["config"]["seed"]) == (0, 1)
    assert a["rounds"][0]["eval_qoe"] != b["rounds"][0]["eval_qoe"]
    assert a["policies"]["student"]["qoe"] > 0
    jobs = [json.loads(line) for line in (sweep / "jobs.jsonl").read_text().splitlines()]
    assert sorted(j["job"] for j in jobs) == [0, 1]


@pytest.mark.slow
def test_optuna_sweeper_optimises_the_final_qoe(tmp_path):
    sweep = tmp_path / "optuna"
    r = run(*TINY, "hparams_search=keco_optuna", "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:]
    trials = [results(sweep / str(i)) for i in range(2)]
    qoe = [t["summary"]["final_qoe"] for t in trials]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(qoe))
    knobs = {"strategy.delta.kind", "strategy.delta.start", "strategy.delta.floor",
             "strategy.temperature", "strategy.deadline_s"}  # fmt: skip
    assert set(best["best_params"]) == knobs
    resolved = trials[0]["config"]["resolved"]["strategy"]
    assert resolved["temperature"] != trials[1]["config"]["resolved"]["strategy"]["temperature"]
    assert 1.0 <= resolved["temperature"] <= 6.0
    assert "sweep: job 1 completed (2/2)" in r.stdout
    assert "alembic" not in r.stdout

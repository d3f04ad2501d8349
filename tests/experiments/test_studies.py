"""The paper studies (``task: study``): every config composes and validates, bad names fail
with the valid ones, every study runs with ``debug=smoke``, and a two-seed smoke sweep turns
into a summary through ``experiments.report``."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.config import ConfigError, compose
from common.fed.settings import default_client_dir, federated_from_dict
from experiments.tasks.study import apply_smoke, plan
from experiments.tasks.study_settings import FEDERATED_METHODS, METHODS, study_from_dict

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted(
    p.stem
    for p in (ROOT / "conf" / "experiment").glob("*.yaml")
    if "task: study" in p.read_text() or "/study@experiment" in p.read_text()
)
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, env=ENV,
        timeout=timeout,
    )  # fmt: skip


def test_the_six_studies_of_the_issue_exist():
    expected = {"keco_energy", "keco_throughput", "keco_failures", "seed001_load",
                "fedmeta2ag_clients", "noniid"}  # fmt: skip
    assert expected <= set(STUDIES)


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("name", STUDIES)
def test_every_study_composes_and_validates(name, smoke, tmp_path):
    overrides = [f"experiment={name}"] + (["debug=smoke"] if smoke else [])
    cfg = apply_smoke(compose(overrides))
    study = study_from_dict(cfg.experiment)
    fed = federated_from_dict(cfg, tmp_path)
    points = plan(cfg, study)
    facets = max(1, len(study.facets))
    values = 1 if study.sweep.target == "timeline" else len(study.sweep.values)
    assert len(points) == facets * values
    assert study.report["panels"] and study.report["x"] == study.sweep.x
    if smoke:  # the smoke worlds are tiny
        assert fed.federation.rounds == 1 and fed.scenario.n_slots <= 40
    for _, _, world in points:
        if world is not None:
            assert world.n_edges == fed.scenario.n_edges


def test_unknown_method_fails_with_the_valid_names():
    cfg = compose(["experiment=noniid"])
    raw = {**cfg.experiment, "methods": ["keco", "fedprox"]}
    with pytest.raises(ConfigError, match="unknown methods \\['fedprox'\\]; valid methods are"):
        study_from_dict(raw)
    assert set(FEDERATED_METHODS) < set(METHODS)


def test_federation_sweep_rejects_methods_without_federation():
    cfg = compose(["experiment=noniid"])
    with pytest.raises(ConfigError, match="not federated"):
        study_from_dict({**cfg.experiment, "methods": ["keco", "centralized"]})
    # the heuristics are the references every study shows
    study_from_dict({**cfg.experiment, "methods": ["keco", "greedy", "oracle"]})


def test_unknown_strategy_name_fails_with_the_valid_names(tmp_path):
    cfg = compose(["experiment=federation", "strategy.name=fedprox"])
    with pytest.raises(ConfigError, match="strategy.name must be one of .*fedmeta2ag"):
        federated_from_dict(cfg, tmp_path)


@pytest.mark.parametrize(
    "override, listed",
    [("experiment=fig99", "keco_energy"), ("strategy=fedprox", "feddistill")],
)
def test_unknown_experiment_or_strategy_group_lists_the_options(override, listed):
    r = _cli("experiments.run", override, timeout=120)
    assert r.returncode != 0
    assert "Available options" in r.stderr and listed in r.stderr


def _records(run_dir: Path) -> list[dict]:
    res = json.loads((run_dir / "results.json").read_text())
    assert res["study"] and res["seed"] == 0
    return res["records"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [s for s in STUDIES if s != "keco_energy"])
def test_every_study_runs_with_debug_smoke(name, tmp_path):
    """(keco_energy runs in the two-seed sweep test below.)"""
    r = _cli("experiments.run", f"experiment={name}", "debug=smoke", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = apply_smoke(compose([f"experiment={name}", "debug=smoke"]))
    study = study_from_dict(cfg.experiment)
    records = _records(tmp_path)
    methods = {rec["method"] for rec in records}
    assert methods == set(study.methods)
    x = study.sweep.x
    for rec in records:
        assert rec[x] is not None
        values = [v for k, v in rec.items() if k not in ("method", x, study.facet, "episodes")]
        assert all(np.isfinite(v) for v in values), rec
        # every record keeps its metrics per held-out episode (the report's intervals)
        per_episode = rec["episodes"]
        assert per_episode and all(np.isfinite(v).all() for v in per_episode.values())
    if study.sweep.target == "timeline":
        for facet in study.facets:
            times = [r[x] for r in records if r["method"] == "keco" and r[study.facet] == facet]
            assert times == sorted(times) and len(times) >= 2
            assert all(r["throughput"] >= 0 for r in records)
    else:
        facets = max(1, len(study.facets))
        assert len(records) == len(study.methods) * len(study.sweep.values) * facets
    by = {(r["method"], r[x], r.get(study.facet)): r for r in records}
    if name == "seed001_load":  # the heuristics behave as their names say
        for (method, _, _), rec in by.items():
            if method == "all_local":
                assert rec["offload_ratio"] == 0.0
            if method == "all_offload":
                assert rec["offload_ratio"] == 1.0
            assert rec["completion_rate"] == pytest.approx(1 - rec["drop_ratio"])
    if name == "keco_failures":
        assert all(r["offload_failures"] >= 0 for r in records)
    if name == "noniid":  # FedDistill uploads soft labels only: its weights stay on the devices
        info = json.loads((tmp_path / "results.json").read_text())["methods"]
        for tag in {k.split("-", 1)[1] for k in info}:
            assert (
                info[f"feddistill-{tag}"]["bytes_up_total"] < info[f"keco-{tag}"]["bytes_up_total"]
            )
            run_dir = info[f"feddistill-{tag}"]["run_dir"]  # its states are on the clients' side
            states = list((Path(default_client_dir(run_dir)) / "states").glob("*.npz"))
            assert states and all("model" in np.load(p).files for p in states)


@pytest.mark.slow
def test_two_seed_smoke_sweep_becomes_a_summary_with_figures(tmp_path):
    sweep = tmp_path / "sweep"
    # the two jobs side by side, each in its own process with its own Ray (the `sweep` extra)
    r = _cli(
        "experiments.run", "-m", "experiment=keco_energy", "debug=smoke", "seed=0,1",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr
    jobs = [json.loads((sweep / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert [j["seed"] for j in jobs] == [0, 1]
    r = _cli("experiments.report", f"dir={sweep}", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].endswith("summary.md")
    assert (sweep / "keco_energy.png").stat().st_size > 10_000
    md = (sweep / "summary.md").read_text()
    assert "keco_energy" in md and "Paired difference to `greedy`" in md
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    # every (method, x, metric) cell is the mean over the two seeds' held-out episodes, its
    # std that of the per-seed means, with an interval around the mean
    x_key = "data_scale"
    checked = 0
    for row in rows:
        if row["metric"] not in ("energy_local", "energy_tx", "qoe"):
            continue
        vals = [
            rec["episodes"][row["metric"]]
            for job in jobs
            for rec in job["records"]
            if rec["method"] == row["method"] and str(rec[x_key]) == row["x"]
        ]
        assert len(vals) == 2 and int(row["n"]) == 2
        assert float(row["mean"]) == pytest.approx(np.mean(vals), rel=1e-9, abs=1e-12)
        seed_means = np.mean(vals, axis=1)
        assert float(row["std"]) == pytest.approx(np.std(seed_means, ddof=1), rel=1e-9, abs=1e-12)
        assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])
        checked += 1
    assert checked == 5 * 2 * 3  # 5 methods (greedy, oracle too) × 2 data scales × 3 metrics


def test_method_overrides_replace_the_jobs_own():
    from experiments.baselines import merge_overrides

    merged = merge_overrides(
        ["experiment=noniid", "he=ckks", "seed=1"], ["strategy=fedavg", "he=off"], ["+x.y=2"]
    )
    assert merged == ["experiment=noniid", "seed=1", "strategy=fedavg", "he=off", "+x.y=2"]


def test_a_bad_sweep_value_fails_before_any_training(tmp_path):
    cfg = compose(["experiment=keco_failures"])
    cfg.experiment.sweep["values"] = [0.05, 1.5]  # an arrival probability above 1
    with pytest.raises(ConfigError, match="arrival_prob"):
        plan(cfg, study_from_dict(cfg.experiment))

import csv
import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from common.config import CONF_DIR, ConfigError
from common.models.nets import model_from_dict
from experiments.run import run
from experiments.tasks import available_tasks, get_task
from experiments.tasks.distill_tables import distill_tables_from_dict

SHRINK = [
    "scenario.n_devices=8",
    "scenario.n_slots=20",
    "model.lstm_hidden=8",
    "model.hidden=[16]",
    "experiment.eval_episodes=3",
    "experiment.distill_checkpoints=[10,20]",
    "experiment.distill.steps=20",
    "experiment.ratios=[0.4,1.0]",
    "experiment.imitation.episodes=3",
    "experiment.imitation.steps=20",
    "experiment.distill_episodes=3",
    "experiment.latency_reps=20",
    "experiment.agreement_states=500",
    "experiment.scratch_d3qn.episodes=4",
    "experiment.scratch_d3qn.updates_per_episode=3",
]


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("model", ["cnn", "lstm_dueling", "lstm_dueling_wide", "mlp"])
def test_every_model_group_and_the_experiment_compose(model):
    assert _compose([]).model.lstm_hidden == 192  # the experiment's default teacher
    cfg = _compose([f"model={model}"])
    assert model_from_dict(cfg.model).arch == model.removesuffix("_wide")
    exp = distill_tables_from_dict(cfg.experiment)
    assert exp.distill_checkpoints == (500, 1000, 2000, 5000, 10000, 20000)
    assert exp.ratios == (0.1, 0.2, 0.4, 0.6, 0.8, 1.0) and exp.eval_episodes == 50
    assert cfg.scenario.name == "seed001" and cfg.scenario.n_devices == 50


def test_unknown_task_lists_the_valid_ones():
    assert "distill_tables" in available_tasks()
    with pytest.raises(ConfigError, match="valid tasks are .*distill_tables"):
        get_task("nope")


def test_bad_experiment_value_names_the_field():
    cfg = _compose(["experiment.teacher_training=magic"])
    with pytest.raises(ConfigError, match="experiment.teacher_training"):
        distill_tables_from_dict(cfg.experiment)


def test_shrunk_distill_tables_run_writes_results_and_tables(tmp_path):
    torch.set_num_threads(1)
    cfg = _compose(SHRINK)
    results = run(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["experiment"]["task"] == "distill_tables"
    policies = saved["policies"]
    expected = {"teacher", "student", "student_int8", "student_scratch", "all_local",
                "all_offload", "random", "greedy", "load_balance", "oracle"}  # fmt: skip
    assert set(policies) == expected
    for name in ("teacher", "student", "student_int8", "student_scratch"):
        p = policies[name]
        assert p["params"] > 0 and p["infer_us"] > 0
        for key in ("qoe", "qoe_episode", "delay", "drop_ratio", "energy_total", "throughput"):
            assert math.isfinite(p[key])
    assert policies["student"]["params"] < policies["teacher"]["params"]
    assert [r["distill_steps"] for r in saved["rounds"]] == [10, 20]
    assert 0 <= saved["checks"]["int8_agreement"] <= 1
    assert results["checks"]["param_reduction"] == pytest.approx(
        1 - policies["student"]["params"] / policies["teacher"]["params"]
    )
    md = (tmp_path / "tables.md").read_text()
    assert "Table 1" in md and "Table 2" in md and "Table 3" in md and " ± " in md
    table1 = list(csv.reader((tmp_path / "table1.csv").open()))
    assert table1[0][0] == "DISTILL_STEPS" and [r[0] for r in table1[1:]] == ["10", "20"]
    table2 = list(csv.reader((tmp_path / "table2.csv").open()))
    assert [r[0] for r in table2[1:]] == ["0.4", "1"]
    table3 = list(csv.reader((tmp_path / "table3.csv").open()))
    rows = {r[0]: r for r in table3[1:]}
    assert rows["teacher"][-2:] == ["0.00", "0.00"]
    assert float(rows["student"][-2]) > 0  # parameter reduction %
    assert "oracle" in rows and rows["oracle"][-1] == "—"
    mean, std = rows["greedy"][table3[0].index("AvgQoE")].split(" ± ")
    assert float(mean) > 0 and float(std) >= 0


@pytest.mark.slow
def test_cli_entry_point_runs(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "experiments.run", *SHRINK, "experiment.scratch=false",
           "experiment.int8=false", f"hydra.run.dir={out}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=CONF_DIR.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(json.loads((out / "results.json").read_text())["policies"]) >= {"teacher", "student"}
    bad = subprocess.run([sys.executable, "-m", "experiments.run", "experiment.task=nope",
                          f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True, text=True,
                         cwd=CONF_DIR.parent, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "valid tasks are" in bad.stderr

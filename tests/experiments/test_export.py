"""``python -m experiments.export dir=<run dir>``: a real (tiny) CKKS federation, its final student
exported to ONNX and TorchScript, float and int8, read back with onnxruntime and torch.jit."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from common.config import compose
from common.mec import feature_scale
from common.models import NetPolicy

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}
# small, but trained enough that the student takes every action somewhere on the check states
TINY = [
    "experiment=federation", "scenario=qeco", "scenario.n_devices=8", "scenario.n_slots=30",
    "federation.num_clients=2", "federation.rounds=3", "model=mlp", "model.hidden=[32]",
    "experiment.teacher_training.episodes=2", "experiment.teacher_training.steps=200",
    "experiment.final_eval_episodes=1", "strategy.local.episodes=2", "strategy.local.epochs=10",
    "strategy.local.eval_episodes=1", "strategy.proxy.size=64",
]  # fmt: skip


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip


def test_export_names_what_to_fix(tmp_path):
    r = cli("experiments.export", f"dir={tmp_path / 'nowhere'}")
    assert r.returncode == 2 and "is not a directory" in r.stderr
    r = cli("experiments.export", f"dir={tmp_path}")
    assert r.returncode == 2 and "holds no federation run's config" in r.stderr
    config = OmegaConf.to_container(compose(TINY), resolve=True)
    (tmp_path / "results.json").write_text(json.dumps({"config": config}))
    r = cli("experiments.export", f"dir={tmp_path}")
    assert r.returncode == 2 and "has no final model" in r.stderr and "checkpoint" in r.stderr


@pytest.mark.slow
def test_exported_students_decide_as_the_pytorch_student(tmp_path):
    import onnxruntime as ort

    from common.fed import build_student
    from experiments.export import load_run
    from experiments.tasks.federation import final_student

    run_dir = tmp_path / "run"
    r = cli("experiments.run", *TINY, f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("experiments.export", f"dir={run_dir}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr == ""  # no exporter chatter
    out = run_dir / "export"
    manifest = json.loads((out / "export.json").read_text())

    # the PyTorch student, decrypted again as the key owner, on the 1,000 check states
    cfg = load_run(run_dir)
    net = build_student(cfg, final_student(cfg))
    states = np.load(out / "check_states.npz")
    f, h = states["features"], states["history"]
    assert f.shape == (1000, 6 + 5 * 5) and h.shape == (1000, 10, 5)
    torch_scores = NetPolicy(net, *feature_scale(cfg.scenario)).scores(f, h)
    torch_actions = torch_scores.argmax(1)
    assert set(torch_actions.tolist()) == set(range(6))  # every action is exercised

    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["scores"], {"features": f, "history": h})
    np.testing.assert_array_equal(scores.argmax(1), torch_actions)
    np.testing.assert_allclose(scores, torch_scores, rtol=1e-4, atol=1e-4)
    scripted = torch.jit.load(str(out / "student.pt"))
    with torch.inference_mode():
        ts_scores = scripted(torch.from_numpy(f), torch.from_numpy(h)).numpy()
    np.testing.assert_array_equal(ts_scores.argmax(1), torch_actions)
    np.testing.assert_allclose(scores, ts_scores, rtol=1e-4, atol=1e-4)
    # int8: TorchScript equals the int8 PyTorch student; both int8 files mostly agree with float
    assert manifest["int8"]["torchscript_agreement_with_int8_student"] == 1.0
    for name in ("student_int8.onnx", "student_int8.pt"):
        assert manifest["files"][name]["agreement_with_float_student"] >= 0.9
        assert manifest["files"][name]["bytes"] < manifest["files"]["student.onnx"]["bytes"]
    assert manifest["features"][0] == {"index": 0, "name": "task_mbit", "unit": "Mbit",
                                       "scale": 7.0}  # fmt: skip
    assert manifest["output"]["actions"][:2] == ["local", "edge node 1"]

    # the README's snippet runs as written and decides as the student
    readme = (out / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    done = subprocess.run([sys.executable, "-c", snippet], cwd=out, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"action {torch_actions[0]} expected {torch_actions[0]}"

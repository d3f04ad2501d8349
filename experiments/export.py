"""Export a run's final student for a device: ``python -m experiments.export dir=<run dir>``.

As the key owner (the run directory holds ``secret.ctx``), it decrypts the final global student
(:func:`experiments.tasks.federation.final_student`) and writes, into ``<run dir>/export`` (or
``out=<dir>``; the options are those of ``conf/export.yaml``):

==========================  ========================================================================
file                        what
==========================  ========================================================================
``student.onnx``            the float student with its input normalisation inside the graph:
                            inputs ``features`` [B, F] and ``history`` [B, K, M] in the
                            simulator's units, output ``scores`` [B, M + 1]; action = argmax
``student_int8.onnx``       onnxruntime's dynamic int8 quantisation of it (int8 weights)
``student.pt``              the float student as frozen TorchScript (``torch.jit.load``)
``student_int8.pt``         the int8 student as TorchScript: static int8 (weights and activations,
                            scales calibrated on the check states) for CNN/MLP students, dynamic
                            int8 for LSTM ones
``example.json``            one observation and the action the student takes for it
``check_states.npz``        the states the export was checked on and the PyTorch student's actions
``export.json``             the manifest: inputs, feature columns and units, actions, sizes, and
                            how often each file decides as the PyTorch student on the check states
``README.md``               the few lines that load ``student.onnx`` with onnxruntime and decide
==========================  ========================================================================

The check states are ``states`` (1,000) states the float student meets in fresh episodes of the
run's scenario. The float files must decide exactly as the PyTorch student on every one of them
(the command fails otherwise); the int8 TorchScript file exactly as the int8 PyTorch student; the
int8 files' agreement with the float student is recorded. Needs the ``export`` extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from common.config import ConfigError
from common.fed.settings import FederatedRunConfig, federated_from_dict
from common.mec import feature_scale
from common.mec.evaluate import task_states
from common.mec.features import SCALAR_FIELDS, column_names
from common.models import (
    NetPolicy,
    ScaledInputs,
    count_params,
    export_torchscript,
    quantize_int8,
    quantize_int8_static,
)
from experiments.cli import hydra_app
from experiments.logs import setup_logging

CHECK_SEED = 70_000
"""Seed of the episodes the check states come from (apart from training and evaluation)."""
FEATURE_UNITS = {
    "task_mbit": "Mbit", "density": "Gcycles/Mbit", "task_mem_gb": "GB", "local_wait": "slots",
    "tx_wait": "slots", "alpha": "-", "backlog_mbit": "Mbit", "edge_load_mbit": "Mbit",
    "edge_queues": "queues", "edge_ghz": "GHz", "edge_mem_free_gb": "GB",
}  # fmt: skip
README = """\
# Exported KECO student

`student.onnx` decides where a task runs from what its device observes: `0` = compute locally,
`j` = offload to edge node `j`. The inputs are in the simulator's units (the columns of
`export.json`, `"features"`); the normalisation is inside the graph. Load it with onnxruntime
(`pip install onnxruntime numpy`) and decide for one observation:

```python
import json

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("student.onnx", providers=["CPUExecutionProvider"])
obs = json.load(open("example.json"))
features = np.asarray([obs["features"]], dtype=np.float32)  # [1, {n_features}]
history = np.asarray([obs["history"]], dtype=np.float32)  # [1, {history_slots}, {n_edges}]
(scores,) = session.run(["scores"], {{"features": features, "history": history}})
action = int(scores.argmax(axis=1)[0])
print("action", action, "expected", obs["action"])
```

The same with PyTorch only: `torch.jit.load("student.pt")(torch.tensor(features),
torch.tensor(history))`. `student_int8.onnx` and `student_int8.pt` are the int8 versions (smaller;
how often they pick the float student's action is in `export.json`).
"""


def load_run(run_dir: Path) -> FederatedRunConfig:
    """The run's typed config, from ``.hydra/config.yaml`` or ``results.json``; a clear error
    when the directory is not a finished federation run."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory; pass the directory of a federation run")
    raw: Any = None
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if (run_dir / "results.json").is_file():
        raw = json.loads((run_dir / "results.json").read_text()).get("config")
        if isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k != "resolved"}
    elif hydra_cfg.is_file():  # a run that stopped before its results
        from omegaconf import OmegaConf

        raw = OmegaConf.to_container(OmegaConf.load(hydra_cfg), resolve=True)
    if not isinstance(raw, dict) or (raw.get("experiment") or {}).get("task") != "federation":
        raise ConfigError(
            f"{run_dir} holds no federation run's config (.hydra/config.yaml or results.json "
            "with experiment.task=federation); pass the directory of a finished `python -m "
            "experiments.run experiment=federation` run"
        )
    cfg = federated_from_dict(raw, run_dir)
    if cfg.strategy.name == "feddistill":
        raise ConfigError(
            "strategy=feddistill has no global model (every client keeps its own); export a "
            "run of keco, fedavg or fedmeta2ag"
        )
    if not (run_dir / "checkpoint" / "state.json").is_file():
        raise ConfigError(
            f"{run_dir} has no final model ({run_dir / 'checkpoint'} is missing): the run "
            "stopped before its first round ended; export a finished run"
        )
    return cfg


def check_states(cfg: FederatedRunConfig, policy: NetPolicy, n: int) -> tuple[np.ndarray, ...]:
    """``n`` states (raw features [n, F], histories [n, K, M]) the student meets in fresh
    episodes of the run's scenario."""
    per_episode = max(1.0, cfg.scenario.n_devices * cfg.scenario.n_slots * 0.2)
    episodes = max(1, int(np.ceil(n / per_episode)))
    while True:
        f, h = task_states(cfg.scenario, policy, episodes, CHECK_SEED)
        if len(f) >= n or episodes > 10_000:
            break
        episodes *= 2
    f, h = f[:n].astype(np.float32), h[:n].astype(np.float32)
    if len(f) < n:
        raise ConfigError(f"the scenario yields only {len(f)} states for states={n}")
    return f, h


def _argmax(net: nn.Module, f: np.ndarray, h: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(f), torch.from_numpy(h)).argmax(1).numpy()


def _onnx_actions(path: Path, f: np.ndarray, h: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["scores"], {"features": f, "history": h})
    return scores.argmax(1)


def export_onnx(model: nn.Module, f: np.ndarray, h: np.ndarray, path: Path) -> None:
    """``model(features, history)`` as ONNX with a dynamic batch axis."""
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise ConfigError(
            "ONNX export needs the export extra: pip install 'keco-flower[export]'"
        ) from err
    batch = torch.export.Dim("batch")
    example = (torch.from_numpy(f[:2]), torch.from_numpy(h[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), example, dynamo=True, verbose=False,
            input_names=["features", "history"], output_names=["scores"],
            dynamic_shapes=({0: batch}, {0: batch}),
        )  # fmt: skip
    program.save(str(path))


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Loggers ``names`` (the root for ``""``) at ERROR within the block: the exporters' notes
    (optional torchvision ops, pre-processing advice) are not the user's business here."""
    loggers = [logging.getLogger(name or None) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export(run_dir: Path, out: Path | None = None, n_states: int = 1000) -> dict[str, Any]:
    """Write the export files of ``run_dir`` (see the module docstring); returns the manifest."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from common.fed import build_student
    from experiments.tasks.federation import final_student

    cfg = load_run(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    sc = cfg.scenario
    net = build_student(cfg, final_student(cfg))  # decrypted as the key owner
    feat_scale, hist_scale = feature_scale(sc)
    policy = NetPolicy(net, feat_scale, hist_scale, "student")
    model = ScaledInputs(net, feat_scale, hist_scale).eval()
    f, h = check_states(cfg, policy, n_states)
    reference = policy.scores(f, h).argmax(1)

    with _quiet("torch.onnx"):
        export_onnx(model, f, h, out / "student.onnx")
    torch.jit.save(export_torchscript(model, torch.from_numpy(f[:2]), torch.from_numpy(h[:2]))
                   .module, str(out / "student.pt"))  # fmt: skip
    with _quiet("", "onnxruntime"):
        quantize_dynamic(
            out / "student.onnx", out / "student_int8.onnx", weight_type=QuantType.QInt8
        )
    normalised = [(torch.from_numpy(f / feat_scale), torch.from_numpy(h / hist_scale))]
    if any(isinstance(m, nn.LSTM) for m in net.modules()):
        int8_kind, int8_net = "dynamic", quantize_int8(net)
    else:
        int8_kind, int8_net = "static", quantize_int8_static(net, normalised)
    int8_model = ScaledInputs(int8_net, feat_scale, hist_scale).eval()
    int8_ts = export_torchscript(int8_model, torch.from_numpy(f[:2]), torch.from_numpy(h[:2]))
    torch.jit.save(int8_ts.module, str(out / "student_int8.pt"))

    int8_reference = _argmax(int8_model, f, h)
    decisions = {
        "student.onnx": _onnx_actions(out / "student.onnx", f, h),
        "student.pt": _argmax(torch.jit.load(str(out / "student.pt")), f, h),
        "student_int8.onnx": _onnx_actions(out / "student_int8.onnx", f, h),
        "student_int8.pt": _argmax(torch.jit.load(str(out / "student_int8.pt")), f, h),
    }
    agreement = {name: float((a == reference).mean()) for name, a in decisions.items()}
    int8_exact = float((decisions["student_int8.pt"] == int8_reference).mean())
    for name in ("student.onnx", "student.pt"):
        if agreement[name] != 1.0:
            raise RuntimeError(
                f"{name} decides as the PyTorch student on only {agreement[name]:.1%} of "
                f"{len(f)} states; the export is wrong"
            )
    if int8_exact != 1.0:
        raise RuntimeError(f"student_int8.pt differs from the int8 student ({int8_exact:.1%})")

    np.savez_compressed(out / "check_states.npz", features=f, history=h, actions=reference)
    example = {"features": f[0].tolist(), "history": h[0].tolist(), "action": int(reference[0])}
    (out / "example.json").write_text(json.dumps(example))
    m = sc.n_edges
    manifest = {
        "run_dir": str(run_dir),
        "scenario": sc.name, "n_edges": m, "history_slots": sc.history_slots,
        "student": {"arch": cfg.student.arch, "params": count_params(net)},
        "inputs": {
            "features": {"shape": ["batch", len(column_names(m))], "dtype": "float32"},
            "history": {"shape": ["batch", sc.history_slots, m], "dtype": "float32",
                        "meaning": "active queues per edge node over the last slots, oldest first"},
        },  # fmt: skip
        "features": [
            {"index": i, "name": name, "unit": FEATURE_UNITS[name.split("[")[0]],
             "scale": float(feat_scale[i])}
            for i, name in enumerate(column_names(m))
        ],  # fmt: skip
        "history_scale": float(hist_scale),
        "normalisation": "inside the graph: features / scale, history / history_scale",
        "output": {"name": "scores", "shape": ["batch", m + 1],
                   "actions": ["local"] + [f"edge node {j}" for j in range(1, m + 1)]},
        "files": {
            name: {"bytes": (out / name).stat().st_size,
                   "agreement_with_float_student": agreement[name]}
            for name in decisions
        },  # fmt: skip
        "int8": {"torchscript": int8_kind, "onnx": "dynamic (onnxruntime, int8 weights)",
                 "torchscript_agreement_with_int8_student": int8_exact},
        "check_states": len(f),
        "scalar_fields": list(SCALAR_FIELDS),
    }  # fmt: skip
    (out / "export.json").write_text(json.dumps(manifest, indent=1))
    (out / "README.md").write_text(
        README.format(n_features=len(column_names(m)), history_slots=sc.history_slots, n_edges=m)
    )
    return manifest


@hydra_app("export")
def main(cfg: DictConfig) -> dict[str, Any]:
    """``python -m experiments.export dir=<run dir> [out=<dir>] [states=<n>]``: export, print one
    JSON line (the export directory, the check states, each file's agreement) and return it."""
    setup_logging()
    run_dir = Path(str(cfg.dir))
    out = None if cfg.out is None else Path(str(cfg.out))
    if isinstance(cfg.states, bool) or not isinstance(cfg.states, int) or cfg.states < 1:
        raise ConfigError(f"states must be an integer >= 1, got {cfg.states!r}")
    manifest = export(run_dir, out, cfg.states)
    agreement = {k: v["agreement_with_float_student"] for k, v in manifest["files"].items()}
    summary = {"export": str(out or run_dir / "export"), "check_states": manifest["check_states"],
               "agreement": agreement}  # fmt: skip
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

"""Inference speed of the teacher, its student and the int8 student (untrained weights: speed
does not depend on them).

``python -m experiments.bench suite=infer [model=cnn] [ratio=0.4] [fed_student=mlp]
[scenario=seed001] [reps=1000] [mkldnn=true]``

Per network: batch-1 latency (median µs of one forward pass on one thread: what a device
deciding one task sees), decisions/s at batch 1,024, parameter count, serialised size and the
share of states on which it takes the same action as its float original.

The student is the teacher's topology with every hidden width × ``ratio`` (KD-D3QN);
``fed_student`` adds the federation's own student (``conf/model/<fed_student>.yaml``, the
``model@student`` default; ``none`` leaves it out). Each network runs in two runtimes:

- ``eager``: the PyTorch module as trained; its int8 version is the dynamic quantisation
  (``common.models.quantize_int8``: int8 Linear weights, float convolutions);
- ``TorchScript``: traced and frozen as shipped to a device (``common.models.export_torchscript``);
  its int8 version is the static quantisation (``common.models.quantize_int8_static``: int8
  weights and activations, convolutions included, calibrated on ``calibration`` random states).

The targets compare like with like: student vs teacher in each runtime, and the int8 student vs
the float student both exported. ``mkldnn=false`` runs every network on PyTorch's native CPU
kernels instead of oneDNN.
"""

from __future__ import annotations

from typing import Any

import torch

from common.mec import n_features
from common.mec.scenario import load_scenario
from common.models import (
    Exported,
    build_for_scenario,
    count_params,
    decision_agreement,
    export_torchscript,
    measure_latency_us,
    model_size_bytes,
    quantize_int8,
    quantize_int8_static,
)
from common.models.nets import ModelConfig, load_model
from experiments.benchmarks._fed import emit_table, fmt, markdown_table

STUDENT_RATIO_TARGET = 0.5
"""Target: the student's batch-1 latency is at most half the teacher's."""


def _model(name: str) -> ModelConfig:
    return load_model(name)


def _states(n: int, m: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, n_features(m), generator=gen), torch.rand(n, k, m, generator=gen)


def _variants(
    name: str, net: torch.nn.Module, calibration: list, example: tuple, what: str
) -> dict[str, tuple[torch.nn.Module, torch.nn.Module, str, str]]:
    """``{row: (network, float original, what, runtime)}`` for one float network."""
    rows = {name: (net, net, what, "eager")}
    if name == "teacher":
        rows["teacher_ts"] = (export_torchscript(net, *example), net, what, "TorchScript")
        return rows
    rows[f"{name}_int8"] = (quantize_int8(net), net, f"{what}, int8 dynamic", "eager")
    rows[f"{name}_ts"] = (export_torchscript(net, *example), net, what, "TorchScript")
    static = quantize_int8_static(net, calibration)
    rows[f"{name}_int8_ts"] = (
        export_torchscript(static, *example), net, f"{what}, int8 static", "TorchScript"
    )  # fmt: skip
    return rows


def run(args: dict[str, Any]) -> dict[str, Any]:
    """Batch-1 latency (µs, one thread) and batch-1024 decisions/s of each network."""
    scenario = load_scenario(str(args.get("scenario", "seed001")))
    model = str(args.get("model", "cnn"))
    ratio = float(args.get("ratio", 0.4))
    reps = int(args.get("reps", 1000))
    n_calibration = int(args.get("calibration", 4096))
    fed_student = str(args.get("fed_student", "mlp"))
    mkldnn = bool(args.get("mkldnn", True))
    cfg = _model(model)
    m, k = scenario.n_edges, scenario.history_slots
    torch.manual_seed(0)
    calibration = [
        (f[i : i + 256], h[i : i + 256])
        for f, h in [_states(n_calibration, m, k, seed=1)]
        for i in range(0, n_calibration, 256)
    ]
    probe = _states(4096, m, k, seed=2)  # agreement with the float original
    example = _states(1, m, k, seed=3)
    nets = _variants("teacher", build_for_scenario(cfg, scenario), calibration, example, model)
    student = build_for_scenario(cfg.scaled(ratio), scenario)
    nets.update(_variants("student", student, calibration, example, f"{model} × {ratio}"))
    if fed_student != "none":
        fed = build_for_scenario(_model(fed_student), scenario)
        nets.update(_variants("fed_student", fed, calibration, example, fed_student))
    out: dict[str, Any] = {
        "model": model, "ratio": ratio, "fed_student": fed_student, "scenario": scenario.name,
        "mkldnn": mkldnn, "threads": 1, "engine": torch.backends.quantized.engine,
    }  # fmt: skip
    old = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = mkldnn
    try:
        for name, (net, base, what, runtime) in nets.items():
            batch_us = measure_latency_us(
                net, n_features(m), k, m, reps=max(3, reps // 100), warmup=2, batch=1024
            )
            out[name] = {
                "what": what,
                "runtime": runtime,
                "params": count_params(base),  # packed int8 weights are not Parameters
                "size_bytes": net.nbytes() if isinstance(net, Exported) else model_size_bytes(net),
                "latency_us_batch1": measure_latency_us(
                    net, n_features(m), k, m, reps=reps, warmup=min(50, reps)
                ),
                "decisions_per_s_batch1024": 1024 / (batch_us * 1e-6),
                "agreement": decision_agreement(base, net, *probe),
            }
    finally:
        torch.backends.mkldnn.enabled = old

    def ratio_of(a: str, b: str) -> float:
        return out[a]["latency_us_batch1"] / out[b]["latency_us_batch1"]

    out["student_over_teacher"] = ratio_of("student", "teacher")
    out["student_ts_over_teacher_ts"] = ratio_of("student_ts", "teacher_ts")
    out["int8_dynamic_over_student"] = ratio_of("student_int8", "student")
    out["int8_over_student"] = ratio_of("student_int8_ts", "student_ts")
    targets = {
        "student_le_0.5x_teacher": out["student_over_teacher"] <= STUDENT_RATIO_TARGET,
        "student_ts_le_0.5x_teacher_ts": out["student_ts_over_teacher_ts"] <= STUDENT_RATIO_TARGET,
        "int8_le_float_student": out["int8_over_student"] <= 1.0,
    }
    if fed_student != "none":
        out["fed_student_over_teacher"] = ratio_of("fed_student", "teacher")
        out["fed_int8_dynamic_over_fed_student"] = ratio_of("fed_student_int8", "fed_student")
        out["fed_int8_over_fed_student"] = ratio_of("fed_student_int8_ts", "fed_student_ts")
        targets["fed_student_le_0.5x_teacher"] = (
            out["fed_student_over_teacher"] <= STUDENT_RATIO_TARGET
        )
        targets["fed_int8_le_float_fed_student"] = out["fed_int8_over_fed_student"] <= 1.0
    out["targets_met"] = targets
    rows = []
    for name, (_, _, what, runtime) in nets.items():
        row = out[name]
        same = "teacher_ts" if runtime == "TorchScript" else "teacher"
        rows.append([
            name, what, runtime, f"{row['params']:,}", fmt(row["size_bytes"] / 1e3, 0),
            fmt(row["latency_us_batch1"], 1), fmt(ratio_of(name, same)),
            fmt(row["decisions_per_s_batch1024"], 0), fmt(100 * row["agreement"], 1),
        ])  # fmt: skip
    out["table"] = markdown_table(
        ["network", "what", "runtime", "params", "size KB", "batch-1 µs", "× teacher",
         "decisions/s @1024", "same action %"],
        rows,
    )  # fmt: skip
    emit_table("infer: per-decision latency (1 thread)", out["table"])
    return out

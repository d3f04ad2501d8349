"""Inference speed of the teacher, its student and the int8 student (untrained weights: speed
does not depend on them).

``python -m experiments.bench suite=infer [model=cnn] [ratio=0.4] [fed_student=mlp]
[scenario=seed001] [reps=1000] [mkldnn=true]``

Per network: batch-1 latency (median µs of one forward pass on one thread: what a device
deciding one task sees) and decisions/s at batch 1,024, parameter count and serialised size.
The student is the teacher's topology with every hidden width × ``ratio`` (KD-D3QN); the int8
student is its dynamic quantisation (``common.models.quantize_int8``). ``fed_student`` adds the
federation's own student (``conf/model/<fed_student>.yaml``, the ``model@student`` default)
and its int8 version; ``fed_student=none`` leaves them out. ``mkldnn=false`` runs every network
on PyTorch's native CPU kernels instead of oneDNN.
"""

from __future__ import annotations

from typing import Any

import torch
import yaml

from common.config import CONF_DIR, load_scenario, model_from_dict
from common.models import (
    build_for_scenario,
    count_params,
    measure_latency_us,
    model_size_bytes,
    quantize_int8,
)
from experiments.benchmarks._fed import emit_table, fmt, markdown_table

STUDENT_RATIO_TARGET = 0.5
"""Target: the student's batch-1 latency is at most half the teacher's."""


def _model(name: str):
    return model_from_dict(yaml.safe_load((CONF_DIR / "model" / f"{name}.yaml").read_text()))


def run(args: dict[str, Any]) -> dict[str, Any]:
    """Batch-1 latency (µs, one thread) and batch-1024 decisions/s of each network."""
    scenario = load_scenario(str(args.get("scenario", "seed001")))
    model = str(args.get("model", "cnn"))
    ratio = float(args.get("ratio", 0.4))
    reps = int(args.get("reps", 1000))
    fed_student = str(args.get("fed_student", "mlp"))
    mkldnn = bool(args.get("mkldnn", True))
    cfg = _model(model)
    torch.manual_seed(0)
    teacher = build_for_scenario(cfg, scenario)
    student = build_for_scenario(cfg.scaled(ratio), scenario)
    nets = {"teacher": teacher, "student": student, "student_int8": quantize_int8(student)}
    if fed_student != "none":
        fed = build_for_scenario(_model(fed_student), scenario)
        nets.update({"fed_student": fed, "fed_student_int8": quantize_int8(fed)})
    m, k = scenario.n_edges, scenario.history_slots
    out: dict[str, Any] = {
        "model": model, "ratio": ratio, "fed_student": fed_student, "scenario": scenario.name,
        "mkldnn": mkldnn, "threads": 1,
    }  # fmt: skip
    old = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = mkldnn
    try:
        for name, net in nets.items():
            batch_us = measure_latency_us(
                net, m + 4, k, m, reps=max(3, reps // 100), warmup=2, batch=1024
            )
            base = nets[name.removesuffix("_int8")]  # packed int8 weights are not Parameters
            out[name] = {
                "params": count_params(base),
                "size_bytes": model_size_bytes(net),
                "latency_us_batch1": measure_latency_us(
                    net, m + 4, k, m, reps=reps, warmup=min(50, reps)
                ),
                "decisions_per_s_batch1024": 1024 / (batch_us * 1e-6),
            }
    finally:
        torch.backends.mkldnn.enabled = old
    teacher_us = out["teacher"]["latency_us_batch1"]
    out["student_over_teacher"] = out["student"]["latency_us_batch1"] / teacher_us
    out["int8_over_student"] = (
        out["student_int8"]["latency_us_batch1"] / out["student"]["latency_us_batch1"]
    )
    targets = {
        "student_le_0.5x_teacher": out["student_over_teacher"] <= STUDENT_RATIO_TARGET,
        "int8_le_float_student": out["int8_over_student"] <= 1.0,
    }
    if fed_student != "none":
        out["fed_student_over_teacher"] = out["fed_student"]["latency_us_batch1"] / teacher_us
        out["fed_int8_over_fed_student"] = (
            out["fed_student_int8"]["latency_us_batch1"] / out["fed_student"]["latency_us_batch1"]
        )
        targets["fed_student_le_0.5x_teacher"] = (
            out["fed_student_over_teacher"] <= STUDENT_RATIO_TARGET
        )
        targets["fed_int8_le_float_fed_student"] = out["fed_int8_over_fed_student"] <= 1.0
    out["targets_met"] = targets
    labels = {
        "teacher": f"{model}", "student": f"{model} × {ratio}",
        "student_int8": f"{model} × {ratio}, int8", "fed_student": fed_student,
        "fed_student_int8": f"{fed_student}, int8",
    }  # fmt: skip
    rows = [
        [name, labels[name], f"{out[name]['params']:,}", fmt(out[name]["size_bytes"] / 1e3, 0),
         fmt(out[name]["latency_us_batch1"], 1),
         fmt(out[name]["latency_us_batch1"] / teacher_us),
         fmt(out[name]["decisions_per_s_batch1024"], 0)]
        for name in nets
    ]  # fmt: skip
    out["table"] = markdown_table(
        ["network", "what", "params", "size KB", "batch-1 µs", "× teacher", "decisions/s @1024"],
        rows,
    )
    emit_table("infer: per-decision latency (1 thread)", out["table"])
    return out

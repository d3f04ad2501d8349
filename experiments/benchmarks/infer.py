"""Inference speed of the teacher, its student and the int8 student (untrained weights: speed
does not depend on them): ``python -m experiments.bench suite=infer [model=cnn ratio=0.4]``."""

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


def run(args: dict[str, Any]) -> dict[str, Any]:
    """Batch-1 latency (µs, one thread) and batch-1024 decisions/s of each network."""
    scenario = load_scenario(str(args.get("scenario", "seed001")))
    model = str(args.get("model", "cnn"))
    ratio = float(args.get("ratio", 0.4))
    reps = int(args.get("reps", 1000))
    cfg = model_from_dict(yaml.safe_load((CONF_DIR / "model" / f"{model}.yaml").read_text()))
    torch.manual_seed(0)
    teacher = build_for_scenario(cfg, scenario)
    student = build_for_scenario(cfg.scaled(ratio), scenario)
    nets = {"teacher": teacher, "student": student, "student_int8": quantize_int8(student)}
    m, k = scenario.n_edges, scenario.history_slots
    out: dict[str, Any] = {"model": model, "ratio": ratio}
    for name, net in nets.items():
        batch_us = measure_latency_us(net, m + 4, k, m, reps=max(10, reps // 20), batch=1024)
        out[name] = {
            "params": count_params(net),
            "size_bytes": model_size_bytes(net),
            "latency_us_batch1": measure_latency_us(net, m + 4, k, m, reps=reps),
            "decisions_per_s_batch1024": 1024 / (batch_us * 1e-6),
        }
    return out

"""Flower plumbing: the KECO strategy with HE off vs Flower's own FedAvg, identical clients.

``python -m experiments.bench suite=flower [clients=[10,100]] [rounds=3] [repeats=1]
[overrides=[...]]``

Both federations run the same Flower simulation on Ray (``experiments.benchmarks._fed``) with
the same clients, seeds and local training: FedAvg (``strategy=fedavg``) trains on hard labels
(δ = 1) and takes its per-class logits from the student, so KECO runs with the same δ = 1 and
``strategy.local.logits_source=student``. What differs is only the strategy and its messages:
KECO's packed payloads and validated add-only sums (plaintext backend) against FedAvg's
ArrayRecord averaging. Every client trains every round; the ratio uses the steady rounds
(round 1 starts the Ray actors and is reported apart).
"""

from __future__ import annotations

from typing import Any

from experiments.benchmarks._fed import (
    FedBench,
    emit_table,
    fmt,
    markdown_table,
    round_ratios,
)

RATIO_TARGET = 1.1
"""Target: a KECO round (HE off) takes at most 1.1 × Flower FedAvg's."""

SAME_TRAINING = (
    "he=off",
    "strategy.local.logits_source=student",
    "strategy.correction=false",
    "strategy.delta.kind=constant",
    "strategy.delta.start=1.0",
    "strategy.delta.floor=1.0",
    "strategy.delta.length=1",
)
"""KECO with FedAvg's local training (conf/strategy/fedavg.yaml: δ = 1, no Δ)."""

STRATEGIES = {"keco": ("strategy=keco", *SAME_TRAINING), "fedavg": ("strategy=fedavg", "he=off")}


def run(args: dict[str, Any]) -> dict[str, Any]:
    """KECO (HE off) and FedAvg side by side at each number of clients."""
    clients = [int(c) for c in args.get("clients", [10, 100])]
    rounds = int(args.get("rounds", 3))
    repeats = int(args.get("repeats", 1))
    with FedBench(args) as bench:
        config = bench.describe(STRATEGIES["keco"])
        summaries = bench.side_by_side("flower", STRATEGIES, clients, rounds, repeats)
    rows = [{"strategy": s, **summary[s]} for summary in summaries.values() for s in STRATEGIES]
    ratios = [
        {"clients": n, **round_ratios(summary["keco"], summary["fedavg"])}
        for n, summary in summaries.items()
    ]
    by = {(r["clients"], r["strategy"]): r for r in rows}
    lines = []
    for q in ratios:
        k, f = by[q["clients"], "keco"], by[q["clients"], "fedavg"]
        lines.append(
            [q["clients"], fmt(k["round_s"]), fmt(f["round_s"]), fmt(q["round_ratio"]),
             fmt(k["round_cpu_s"]), fmt(f["round_cpu_s"]), fmt(q["round_cpu_ratio"]),
             fmt(k["bytes_up_per_round"] / 1e6, 2), fmt(f["bytes_up_per_round"] / 1e6, 2),
             fmt(k["bytes_up_per_client_round"] / 1e3, 1),
             fmt(f["bytes_up_per_client_round"] / 1e3, 1),
             fmt(k["bytes_per_uploaded_value"]), fmt(f["bytes_per_uploaded_value"]),
             fmt(k["first_round_s"], 1), fmt(f["first_round_s"], 1),
             "/".join(f"{v:.1f}" for v in k["load"] + f["load"])]
        )  # fmt: skip
    head = [
        "clients", "KECO round s", "FedAvg round s", "ratio", "KECO round CPU s",
        "FedAvg round CPU s", "CPU ratio", "KECO up MB/round", "FedAvg up MB/round",
        "KECO up kB/client/round", "FedAvg up kB/client/round", "KECO B/value",
        "FedAvg B/value (float32: 4)",
        "KECO round 1 s", "FedAvg round 1 s", "load",
    ]  # fmt: skip
    table = markdown_table(head, lines)
    emit_table("flower: KECO (HE off) vs Flower FedAvg", table)
    largest = max(ratios, key=lambda q: q["clients"])
    n = largest["clients"]
    targets = {
        f"keco_round_{name}_le_1.1x_fedavg_at_{n}_clients": (
            None if largest[key] is None else largest[key] <= RATIO_TARGET
        )
        for key, name in (("round_ratio", "wall"), ("round_cpu_ratio", "cpu"))
    }
    return {
        "config": {**config, "rounds": rounds, "keco_overrides": list(STRATEGIES["keco"])},
        "rows": rows,
        "ratios": ratios,
        "targets_met": targets,
        "table": table,
    }

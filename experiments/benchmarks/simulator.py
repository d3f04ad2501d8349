"""Simulator speed: slots/s and device-decisions/s for ``tang2020`` under cheap policies.

``python -m experiments.bench suite=simulator [episodes=200] [batch=100]``. Slots are counted
across parallel episodes; the policy's time is included.
"""

from __future__ import annotations

from typing import Any

from common.mec import evaluate_policy
from common.mec.policies import make_policy
from common.mec.scenario import load_scenario
from experiments.benchmarks._fed import emit_table


def run(args: dict[str, Any]) -> dict[str, Any]:
    scenario = load_scenario(args.get("scenario", "tang2020"))
    episodes = int(args.get("episodes", 200))
    batch = int(args.get("batch", 200))
    policies = args.get("policies", ["all_local", "random", "greedy", "oracle"])
    out: dict[str, Any] = {"scenario": scenario.name, "episodes": episodes, "batch": batch}
    rows = []
    for name in policies:
        n_ep = episodes if name != "oracle" else max(batch, episodes // 4)
        evaluate_policy(scenario, make_policy(name), min(batch, n_ep), seed=99, batch=batch)
        m = evaluate_policy(scenario, make_policy(name), n_ep, seed=0, batch=batch)
        slots = m["slots_per_s"]
        decisions = slots * m["tasks"] / (m["episodes"] * scenario.n_time)
        out[name] = {
            "slots_per_s": round(slots),
            "decisions_per_s": round(decisions),
            "episodes": n_ep,
        }
        rows.append(f"| {name} | {slots:,.0f} | {decisions:,.0f} |")
    out["table"] = "\n".join(
        ["| policy | slots/s | device-decisions/s |", "| --- | ---: | ---: |", *rows]
    )
    emit_table(f"simulator: {scenario.name}, {batch} episodes at a time", out["table"])
    return out

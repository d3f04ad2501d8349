"""Gymnasium vector envs: the batched ``MECVectorEnv`` against ``SyncVectorEnv`` of ``MECEnv``.

``python -m experiments.bench suite=gym [num_envs=64] [steps=200] [repeats=3] [scenario=qeco]``.
Both are built by ``gymnasium.make_vec("keco/MEC-v0", ...)`` (``vector_entry_point`` and
``sync``), reset with the same seed and stepped with the same pre-drawn random actions, so they
simulate identical episodes (a test checks that step for step). A step is one slot of all
``num_envs`` episodes; the two alternate within each repeat and the median is reported.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np

import common.mec  # noqa: F401  (registers the ids)
from common.mec.registration import ENV_ID
from experiments.benchmarks._fed import emit_table

MODES = {"vector": "vector_entry_point", "sync": "sync"}


def steps_per_s(env: gym.vector.VectorEnv, actions: np.ndarray, seed: int) -> float:
    """Vector steps per second over ``actions`` [steps, E, N] from a reset with ``seed``
    (autoresets included)."""
    env.reset(seed=seed)
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    return len(actions) / (time.perf_counter() - start)


def run(args: dict[str, Any]) -> dict[str, Any]:
    num_envs = int(args.get("num_envs", 64))
    steps = int(args.get("steps", 200))
    repeats = int(args.get("repeats", 3))
    scenario = str(args.get("scenario", "qeco"))
    envs = {
        name: gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode=mode, scenario=scenario)
        for name, mode in MODES.items()
    }
    n, m = envs["vector"].unwrapped.sim.N, envs["vector"].unwrapped.sim.M
    actions = np.random.default_rng(0).integers(0, m + 1, size=(steps, num_envs, n))
    rates: dict[str, list[float]] = {name: [] for name in envs}
    for r in range(repeats + 1):  # the first round warms up and is not counted
        order = list(envs) if r % 2 else list(envs)[::-1]
        for name in order:
            rate = steps_per_s(envs[name], actions, seed=r)
            if r:
                rates[name].append(rate)
    med = {name: statistics.median(v) for name, v in rates.items()}
    ratio = med["vector"] / med["sync"]
    out: dict[str, Any] = {
        "scenario": scenario, "num_envs": num_envs, "steps": steps, "repeats": repeats,
        "vector_steps_per_s": round(med["vector"], 1), "sync_steps_per_s": round(med["sync"], 1),
        "vector_over_sync": round(ratio, 2),
        "slots_per_s": {name: round(v * num_envs) for name, v in med.items()},
    }  # fmt: skip
    out["table"] = "\n".join(
        [
            "| vector env | steps/s | episode-slots/s | × SyncVectorEnv |",
            "| --- | ---: | ---: | ---: |",
            f"| MECVectorEnv (batched) | {med['vector']:,.1f} | {med['vector'] * num_envs:,.0f} "
            f"| {ratio:.1f} |",
            f"| SyncVectorEnv of MECEnv | {med['sync']:,.1f} | {med['sync'] * num_envs:,.0f} "
            "| 1.0 |",
        ]
    )
    emit_table(f"gym: {scenario}, {num_envs} envs, {steps} steps × {repeats}", out["table"])
    for env in envs.values():
        env.close()
    return out

"""Policy evaluation over many episodes and learning datasets recorded from rollouts."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from common.mec.features import n_features
from common.mec.policies import Policy, oracle
from common.mec.scenario import ScenarioConfig
from common.mec.sim import DeviceProfile, MECBatch, summarize


def _batches(episodes: int, batch: int) -> list[int]:
    sizes = [batch] * (episodes // batch)
    if episodes % batch:
        sizes.append(episodes % batch)
    return sizes


def _episode_seeds(seed: int, episodes: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(seed).spawn(episodes)


def rollout(
    scenario: ScenarioConfig,
    policy: Policy,
    episodes: int,
    seed: int,
    batch: int = 50,
    profile: DeviceProfile | None = None,
    on_step=None,
) -> tuple[list[MECBatch], float]:
    """Run ``policy`` for ``episodes`` episodes, ``batch`` at a time; returns finished batches.

    Episode ``i`` is seeded by child ``i`` of ``SeedSequence(seed)`` whatever the batching.
    ``on_step(obs, sim, actions)`` is called before every step (for recording datasets).
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    seeds = _episode_seeds(seed, episodes)
    done: list[MECBatch] = []
    start = time.perf_counter()
    offset = 0
    for size in _batches(episodes, batch):
        sim = MECBatch(scenario, size, profile)
        obs = sim.reset_with(seeds[offset : offset + size])
        offset += size
        while not sim.done:
            actions = policy(obs, sim)
            if on_step is not None:
                on_step(obs, sim, actions)
            obs, _ = sim.step(actions)
        done.append(sim)
    return done, time.perf_counter() - start


def evaluate_policy(
    scenario: ScenarioConfig,
    policy: Policy,
    episodes: int,
    seed: int,
    batch: int = 50,
    profile: DeviceProfile | None = None,
) -> dict[str, float]:
    """§3 metrics of ``policy`` over ``episodes`` episodes (``slots_per_s`` includes the policy)."""
    batches, seconds = rollout(scenario, policy, episodes, seed, batch, profile)
    return summarize(batches, seconds)


@dataclass
class TaskDataset:
    """One row per task: what its device observed, the oracle's label and predicted costs."""

    features: np.ndarray
    """[n, F] float32 feature rows (see :mod:`common.mec.features`)."""
    history: np.ndarray
    """[n, K, M] float32 EN-load history."""
    label: np.ndarray
    """[n] int64 oracle action (the hard label)."""
    costs: np.ndarray
    """[n, M + 1] float32 oracle-predicted cost (−QoE reward) of every action."""
    action: np.ndarray
    """[n] int64 action the behaviour policy took."""

    def __len__(self) -> int:
        return len(self.label)

    @staticmethod
    def concat(parts: list[TaskDataset]) -> TaskDataset:
        return TaskDataset(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in TaskDataset.__dataclass_fields__
            )
        )


def task_states(
    scenario: ScenarioConfig,
    policy: Policy,
    episodes: int,
    seed: int,
    profile: DeviceProfile | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The raw features [n, F] and histories [n, K, M] of every task ``policy`` meets in
    ``episodes`` episodes (the states a proxy set or an export check is drawn from)."""
    features: list[np.ndarray] = []
    histories: list[np.ndarray] = []

    def record(obs, sim, actions) -> None:
        e, n = np.nonzero(obs.mask)
        features.append(obs.features[e, n])
        histories.append(obs.history[e])

    rollout(scenario, policy, episodes, seed, profile=profile, on_step=record)
    m = scenario.n_edges
    if not features:
        return np.zeros((0, n_features(m))), np.zeros((0, scenario.history_slots, m))
    return np.concatenate(features), np.concatenate(histories)


def collect_dataset(
    scenario: ScenarioConfig,
    behaviour: Policy,
    episodes: int,
    seed: int,
    batch: int = 50,
    profile: DeviceProfile | None = None,
) -> TaskDataset:
    """Roll out ``behaviour`` and record every task with the oracle's label and action costs."""
    rows: list[TaskDataset] = []

    def record(obs, sim, actions):
        if not obs.mask.any():
            return
        labels, costs = oracle.decide(obs, sim)
        e, n = np.nonzero(obs.mask)
        rows.append(
            TaskDataset(
                features=obs.features[e, n].astype(np.float32),
                history=obs.history[e].astype(np.float32),
                label=labels[e, n].astype(np.int64),
                costs=costs[e, n].astype(np.float32),
                action=np.asarray(actions)[e, n].astype(np.int64),
            )
        )

    rollout(scenario, behaviour, episodes, seed, batch, profile, on_step=record)
    if not rows:
        m = scenario.n_edges
        return TaskDataset(
            np.zeros((0, n_features(m)), np.float32),
            np.zeros((0, scenario.history_slots, m), np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, m + 1), np.float32),
            np.zeros(0, np.int64),
        )
    return TaskDataset.concat(rows)

"""Gymnasium view of the simulator: one MEC episode, all devices acting at once.

``gymnasium.make("keco/MEC-v0", scenario="qeco")`` builds it (ids registered on
``import common.mec``, see :mod:`common.mec.registration`); ``MECEnv(scenario)`` does too.
N devices, M edge nodes (ENs), K history slots, F = 6 + 5·M feature columns:

==============  ============================  =====================================================
key             space                         meaning
==============  ============================  =====================================================
``features``    Box(0, inf, (N, F))           per-device feature rows: the table of
                                              :mod:`common.mec.features` (task Mbit, density,
                                              memory, local and transmit wait in slots, α, then
                                              one column per EN for backlog, load, queues, GHz,
                                              free GB)
``mask``        MultiBinary(N)                1 where a task arrived this slot (only those actions
                                              matter)
``history``     Box(0, N, (K, M))             active queues per EN over the last K slots, oldest
                                              first
action          MultiDiscrete([M + 1] * N)    per device: 0 = compute locally, j = offload to EN j
==============  ============================  =====================================================

With ``normalize=True`` the features and the history are divided by the divisors the project's
networks use (:func:`common.mec.feature_scale`), which brings every column to O(1).

**Reward**: the sum of the QoE rewards of the tasks that finished (completed or dropped) in the
slot; ``info["device_reward"]`` splits it per device. QoE per task is
``R_base − 2·(α·delay + (1−α)·E_scaled)`` when completed and ``−2·(…)`` when dropped
(:mod:`common.mec.sim`).

**Episode end**: terminated after ``n_slots + deadline_slots`` slots (arrivals stop after
``n_slots``; the drain slots let queued tasks finish); never truncated. ``info["metrics"]`` then
holds the episode's metrics (QoE per task, drop ratio, delay, energy, …).

**Arguments**: ``scenario`` (a preset name of ``conf/scenario/`` or a
:class:`common.mec.scenario.ScenarioConfig`), ``profile`` (per-device overrides, non-IID devices),
``normalize`` and any scenario field as a keyword (``n_devices=8``, ``arrival_prob=0.5``, …).

**Seeding**: ``reset(seed=...)`` draws all randomness of the episode from ``self.np_random``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from common.mec.features import feature_scale, n_features
from common.mec.policies import make_policy
from common.mec.scenario import ScenarioConfig, load_scenario
from common.mec.sim import DeviceProfile, MECBatch, Observation

DEFAULT_SCENARIO = "qeco"


def make_scenario(scenario: ScenarioConfig | str = DEFAULT_SCENARIO, **overrides: Any):
    """A validated scenario from a preset name (with field overrides) or a config object."""
    if isinstance(scenario, ScenarioConfig):
        if overrides:
            import dataclasses

            scenario = dataclasses.replace(scenario, **overrides)
        return scenario.validate()
    return load_scenario(str(scenario), **overrides)


class ObservationCodec:
    """Turns the simulator's :class:`Observation` into the environments' observation dicts
    (one code path for the single, vector and multi-agent views)."""

    def __init__(self, sim: MECBatch, normalize: bool) -> None:
        self.normalize = normalize
        N, M, K = sim.N, sim.M, sim.K
        feat_scale, hist_scale = feature_scale(sim.sc)
        if normalize:
            self.feat_div = feat_scale.astype(np.float32)
            self.hist_div = np.float32(hist_scale)
        else:
            self.feat_div = np.ones(n_features(M), dtype=np.float32)
            self.hist_div = np.float32(1.0)
        self.features = spaces.Box(0.0, np.inf, (N, n_features(M)), np.float32)
        self.history = spaces.Box(0.0, float(N) / float(self.hist_div), (K, M), np.float32)
        self.space = spaces.Dict(
            {"features": self.features, "mask": spaces.MultiBinary(N), "history": self.history}
        )

    def batch(self, obs: Observation) -> dict[str, np.ndarray]:
        """Observation dicts of every episode, stacked: features [E, N, F], mask [E, N],
        history [E, K, M]."""
        features = np.maximum(obs.features, 0.0)
        history = obs.history
        if self.normalize:
            features = features / self.feat_div
            history = history / self.hist_div
        return {
            "features": features.astype(np.float32, copy=False),
            "mask": obs.mask.astype(np.int8),
            "history": history.astype(np.float32, copy=False),
        }


def check_render_mode(render_mode: str | None) -> None:
    """The MEC environments draw nothing: ``render_mode`` must stay ``None`` (a TypeError, as for
    an unsupported keyword, so that tools that try a render mode first fall back without it)."""
    if render_mode is not None:
        raise TypeError(f"render_mode={render_mode!r}: the MEC environments have no render modes")


def episode_seed(rng: np.random.Generator) -> np.random.SeedSequence:
    """The seed sequence of the next episode of an environment whose generator is ``rng``
    (single and vector views draw episodes the same way, so they agree under one seed)."""
    return np.random.SeedSequence(int(rng.integers(0, 2**63 - 1))).spawn(1)[0]


class MECEnv(gym.Env):
    """One MEC episode as a Gymnasium environment (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: ScenarioConfig | str = DEFAULT_SCENARIO,
        profile: DeviceProfile | None = None,
        normalize: bool = False,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        check_render_mode(render_mode)
        self.render_mode = None
        self.scenario = make_scenario(scenario, **overrides)
        self.sim = MECBatch(self.scenario, 1, profile)
        self.codec = ObservationCodec(self.sim, normalize)
        self.observation_space = self.codec.space
        self.action_space = spaces.MultiDiscrete([self.sim.M + 1] * self.sim.N)
        self._last: Observation | None = None

    def _obs(self, obs: Observation) -> dict[str, np.ndarray]:
        self._last = obs
        return {k: v[0] for k, v in self.codec.batch(obs).items()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        obs = self.sim.reset_with([episode_seed(self.np_random)])
        return self._obs(obs), {"t": obs.t}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._last is None or self.sim.done:
            raise RuntimeError("call reset() before step() (and after the episode ends)")
        action = np.asarray(action)
        if action.shape != (self.sim.N,):
            raise ValueError(f"action must have shape ({self.sim.N},), got {action.shape}")
        obs, info = self.sim.step(action[None, :].astype(np.int64))
        reward = float(info["reward"][0])
        terminated = bool(self.sim.done)
        out_info: dict[str, Any] = {"t": obs.t, "device_reward": info["device_reward"][0]}
        if terminated:
            out_info["metrics"] = self.sim.metrics()
        return self._obs(obs), reward, terminated, False, out_info

    def policy_action(self, name: str) -> np.ndarray:
        """The action [N] that the project's policy ``name`` (``random``, ``greedy``, ``oracle``,
        … of :mod:`common.mec.policies`) takes in the current state: a baseline to compare an
        agent with in the same episode."""
        if self._last is None:
            raise RuntimeError("call reset() first")
        return make_policy(name)(self._last, self.sim)[0]

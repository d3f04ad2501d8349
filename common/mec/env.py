"""Gymnasium-compatible single-episode wrapper around :class:`common.mec.sim.MECBatch`.

All devices act at once: the action is one integer per device and the observation holds every
device's features. Spaces (N devices, M edge nodes, K history slots):

==============  ============================  =====================================================
key             space                         meaning
==============  ============================  =====================================================
``features``    Box(0, inf, (N, F))           per-device feature rows (``common.mec.features``)
``mask``        MultiBinary(N)                1 where a task arrived this slot
``history``     Box(0, N, (K, M))             active queues per EN over the last K slots
action          MultiDiscrete([M + 1] * N)    0 = local, j = offload to edge node j
==============  ============================  =====================================================

Reward: the sum of the QoE rewards of the tasks that finished (completed or dropped) during the
slot. The episode terminates after ``n_slots + deadline_slots`` slots; it is never truncated.
``reset(seed=...)`` draws all randomness from a generator seeded by ``seed``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from common.config import ScenarioConfig
from common.mec.features import n_features
from common.mec.sim import DeviceProfile, MECBatch, Observation


class MECEnv(gym.Env):
    """One MEC episode as a Gymnasium environment (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, scenario: ScenarioConfig, profile: DeviceProfile | None = None) -> None:
        self.sim = MECBatch(scenario, 1, profile)
        N, M, K = self.sim.N, self.sim.M, self.sim.K
        self.observation_space = spaces.Dict(
            {
                "features": spaces.Box(0.0, np.inf, (N, n_features(M)), np.float32),
                "mask": spaces.MultiBinary(N),
                "history": spaces.Box(0.0, float(N), (K, M), np.float32),
            }
        )
        self.action_space = spaces.MultiDiscrete([M + 1] * N)

    def _obs(self, obs: Observation) -> dict[str, np.ndarray]:
        return {
            "features": np.maximum(obs.features[0], 0.0).astype(np.float32),
            "mask": obs.mask[0].astype(np.int8),
            "history": obs.history[0].astype(np.float32),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        # one integer from the Gymnasium generator seeds the episode (reproducible under seed)
        episode_seed = int(self.np_random.integers(0, 2**63 - 1))
        obs = self.sim.reset(seed=episode_seed)
        return self._obs(obs), {"t": obs.t}

    def step(self, action: np.ndarray):
        action = np.asarray(action)
        if action.shape != (self.sim.N,):
            raise ValueError(f"action must have shape ({self.sim.N},), got {action.shape}")
        obs, info = self.sim.step(action[None, :].astype(np.int64))
        reward = float(info["reward"][0])
        terminated = bool(self.sim.done)
        out_info: dict[str, Any] = {"t": obs.t}
        if terminated:
            out_info["metrics"] = self.sim.metrics()
        return self._obs(obs), reward, terminated, False, out_info

"""A Gymnasium ``VectorEnv`` of E MEC episodes stepped together by one :class:`MECBatch`.

``gymnasium.make_vec("keco/MEC-v0", num_envs=64, vectorization_mode="vector_entry_point")``
builds it. Sub-environment ``i`` is exactly ``MECEnv`` (:mod:`common.mec.env`, same spaces,
rewards and arguments) reset with seed ``seed + i``, as ``SyncVectorEnv`` would seed it, but the
E episodes advance in one vectorised numpy step instead of E Python calls.

Every episode of a scenario lasts the same number of slots, so all sub-environments terminate in
the same step. ``metadata["autoreset_mode"]`` is ``NEXT_STEP`` by default (Gymnasium's default:
the step after the last one resets every episode, ignores its actions and returns zero rewards);
``autoreset_mode=AutoresetMode.SAME_STEP`` resets in the final step and puts the final
observations in ``info["final_obs"]``; ``DISABLED`` leaves ``reset()`` to the caller.
``info["device_reward"]`` is the reward per device [E, N].
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from common.mec.env import (
    DEFAULT_SCENARIO,
    ObservationCodec,
    check_render_mode,
    episode_seed,
    make_scenario,
)
from common.mec.policies import make_policy
from common.mec.scenario import ScenarioConfig
from common.mec.sim import DeviceProfile, MECBatch, Observation


class MECVectorEnv(VectorEnv):
    """``num_envs`` MEC episodes in one batched simulator (see the module docstring)."""

    def __init__(
        self,
        num_envs: int = 1,
        scenario: ScenarioConfig | str = DEFAULT_SCENARIO,
        profile: DeviceProfile | None = None,
        normalize: bool = False,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **overrides: Any,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs <= 0:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        check_render_mode(render_mode)
        self.render_mode = None
        self.scenario = make_scenario(scenario, **overrides)
        self.num_envs = num_envs
        self.sim = MECBatch(self.scenario, num_envs, profile)
        self.codec = ObservationCodec(self.sim, normalize)
        self.single_observation_space = self.codec.space
        self.single_action_space = spaces.MultiDiscrete([self.sim.M + 1] * self.sim.N)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.metadata = {"render_modes": [], "autoreset_mode": AutoresetMode(autoreset_mode)}
        self._rngs: list[np.random.Generator] = []
        self._last: Observation | None = None
        self._needs_reset = False

    def _start(self) -> Observation:
        obs = self.sim.reset_with([episode_seed(rng) for rng in self._rngs])
        self._last = obs
        self._needs_reset = False
        return obs

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed if isinstance(seed, int) else None)
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
        self._rngs = [seeding.np_random(s)[0] for s in seeds]
        obs = self._start()
        return self.codec.batch(obs), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._last is None:
            raise RuntimeError("call reset() before step()")
        mode = self.metadata["autoreset_mode"]
        E = self.num_envs
        if self._needs_reset:
            if mode is AutoresetMode.DISABLED:
                raise RuntimeError("the episodes are over: call reset() (autoreset is disabled)")
            obs = self._start()  # NEXT_STEP: this step only resets, its actions are ignored
            false = np.zeros(E, dtype=bool)
            return self.codec.batch(obs), np.zeros(E), false, false.copy(), {}
        actions = np.asarray(actions)
        if actions.shape != (E, self.sim.N):
            raise ValueError(f"actions must have shape {(E, self.sim.N)}, got {actions.shape}")
        obs, sim_info = self.sim.step(actions.astype(np.int64, copy=False))
        self._last = obs
        terminated = np.full(E, self.sim.done)
        info: dict[str, Any] = {
            "device_reward": sim_info["device_reward"],
            "_device_reward": np.ones(E, dtype=bool),
        }
        batch = self.codec.batch(obs)
        if self.sim.done:
            if mode is AutoresetMode.SAME_STEP:
                info["final_obs"] = np.array(
                    [{k: v[i] for k, v in batch.items()} for i in range(E)], dtype=object
                )
                info["_final_obs"] = np.ones(E, dtype=bool)
                batch = self.codec.batch(self._start())
            else:
                self._needs_reset = True
        return batch, sim_info["reward"], terminated, np.zeros(E, dtype=bool), info

    def policy_actions(self, name: str) -> np.ndarray:
        """Actions [E, N] of the project's policy ``name`` (``random``, ``greedy``, ``oracle``,
        …) in the current states: a baseline for the same episodes."""
        if self._last is None:
            raise RuntimeError("call reset() first")
        return make_policy(name)(self._last, self.sim)

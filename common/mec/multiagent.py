"""PettingZoo view of the simulator: a ``ParallelEnv`` with one agent per mobile device.

Needs the ``rl`` extra (``pip install keco-flower[rl]``). Agents are ``device_0`` …
``device_{N-1}``; all act in every slot (a device without a new task may act: it is ignored).
Each agent sees only what its device observes (the row of :mod:`common.mec.features` and the
public EN-load history), never another device's private state:

==============  ============================  =====================================================
key             space                         meaning
==============  ============================  =====================================================
``features``    Box(0, inf, (F,))             this device's feature row (F = 6 + 5·M)
``task``        Discrete(2)                   1 if a task arrived at this device in this slot
``history``     Box(0, N, (K, M))             active queues per EN over the last K slots
action          Discrete(M + 1)               0 = compute locally, j = offload to EN j
==============  ============================  =====================================================

**Reward** of an agent: the QoE rewards of its device's tasks that finished in the slot (they sum
to :class:`common.mec.env.MECEnv`'s reward). All agents terminate together after
``n_slots + deadline_slots`` slots. ``state()`` is the global view (every device's features and
the history, flattened) for centralised critics. Arguments and seeding are those of
:class:`common.mec.env.MECEnv`, which this wraps.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium import spaces

try:
    from pettingzoo import ParallelEnv
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError(
        "common.mec.multiagent needs PettingZoo: pip install 'keco-flower[rl]' (or pettingzoo)"
    ) from err

from common.mec.env import DEFAULT_SCENARIO, MECEnv
from common.mec.scenario import ScenarioConfig
from common.mec.sim import DeviceProfile


class MECParallelEnv(ParallelEnv):
    """One agent per device over one :class:`MECEnv` episode (see the module docstring)."""

    metadata = {"name": "keco_mec_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(
        self,
        scenario: ScenarioConfig | str = DEFAULT_SCENARIO,
        profile: DeviceProfile | None = None,
        normalize: bool = False,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        self.env = MECEnv(scenario, profile, normalize, render_mode, **overrides)
        self.render_mode = None
        sim, codec = self.env.sim, self.env.codec
        self.possible_agents = [f"device_{i}" for i in range(sim.N)]
        self.agents: list[str] = []
        self._index = {agent: i for i, agent in enumerate(self.possible_agents)}
        features = codec.features
        self._observation_space = spaces.Dict(
            {
                "features": spaces.Box(0.0, np.inf, features.shape[1:], np.float32),
                "task": spaces.Discrete(2),
                "history": codec.history,
            }
        )
        self._action_space = spaces.Discrete(sim.M + 1)
        size = features.shape[0] * features.shape[1] + int(np.prod(codec.history.shape))
        self.state_space = spaces.Box(0.0, np.inf, (size,), np.float32)
        self._obs: dict[str, np.ndarray] | None = None

    @functools.cache  # noqa: B019 - one space object per agent, as PettingZoo asks
    def observation_space(self, agent: str) -> spaces.Space:
        return self._observation_space

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Space:
        return self._action_space

    def _split(self, obs: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
        self._obs = obs
        return {
            agent: {
                "features": obs["features"][i],
                "task": int(obs["mask"][i]),
                "history": obs["history"],
            }
            for agent, i in self._index.items()
        }

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        obs, _ = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return self._split(obs), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("the episode is over: call reset()")
        unknown = sorted(set(actions) - set(self._index))
        if unknown:
            raise ValueError(f"unknown agents {unknown[:3]}; agents are device_0..device_N-1")
        joint = np.zeros(len(self.possible_agents), dtype=np.int64)  # absent agents: local
        for agent, action in actions.items():
            joint[self._index[agent]] = int(action)
        obs, _, terminated, truncated, info = self.env.step(joint)
        device_reward = info["device_reward"]
        agents = self.agents
        rewards = {a: float(device_reward[self._index[a]]) for a in agents}
        terminations = {a: terminated for a in agents}
        truncations = {a: truncated for a in agents}
        infos: dict[str, dict[str, Any]] = {a: {} for a in agents}
        if terminated:
            for a in agents:
                infos[a]["metrics"] = info["metrics"]
            self.agents = []
        observations = {a: o for a, o in self._split(obs).items() if a in set(agents)}
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        if self._obs is None:
            raise RuntimeError("call reset() first")
        return np.concatenate([self._obs["features"].ravel(), self._obs["history"].ravel()])

    def close(self) -> None:
        self.env.close()


def parallel_env(**kwargs: Any) -> MECParallelEnv:
    """PettingZoo's conventional constructor name."""
    return MECParallelEnv(**kwargs)

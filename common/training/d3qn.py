"""D3QN (KD-D3QN §5.2, Tang & Wong): double DQN with dueling heads, one network shared by all
devices, trained on the QoE reward.

Read top to bottom, like CleanRL's ``dqn.py``:

1. simulate ``parallel_episodes`` episodes with ε-greedy actions (an exploring task takes the
   ``heuristic`` policy's action with probability ``heuristic_prob`` — KD-D3QN's
   heuristic-guided exploration — else a uniformly random one);
2. once the episodes end, every task's QoE reward is final; a device's transition links a task's
   state to the state at the device's next task (``done`` after its last task);
3. store transitions in the replay memory and take ``updates_per_episode`` optimiser steps per
   simulated episode on the double-DQN target
   ``y = r + γ · Q_target(s', argmax_a Q_online(s', a))``;
4. copy the online network into the target network every ``target_every`` steps.

Rewards of a task are known only once it completes or is dropped (up to ``deadline_slots``
later), so learning happens between batches of episodes rather than after every slot.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.config import (
    ConfigError,
    build,
    check_positive,
    check_positive_int,
    check_unit,
    to_dict,
)
from common.mec import DeviceProfile, MECBatch, feature_scale, n_features
from common.mec.policies import make_policy
from common.mec.scenario import ScenarioConfig


@dataclass(frozen=True)
class D3QNConfig:
    """Double DQN with dueling heads, shared across devices (KD-D3QN §5.2)."""

    episodes: int = 60
    """Training episodes in total (simulated ``parallel_episodes`` at a time)."""
    parallel_episodes: int = 4
    """Episodes simulated at once between learning phases."""
    gamma: float = 0.9
    """Discount between a device's consecutive tasks (Tang & Wong: 0.9)."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """Transitions per optimiser step."""
    buffer_size: int = 100000
    """Replay memory, transitions."""
    updates_per_episode: int = 40
    """Optimiser steps after each simulated episode."""
    target_every: int = 200
    """Optimiser steps between copies of the online network into the target network."""
    eps_start: float = 1.0
    """ε of ε-greedy at the first episode."""
    eps_end: float = 0.02
    """ε after ``eps_decay_fraction`` of the episodes."""
    eps_decay_fraction: float = 0.6
    """Fraction of the episodes over which ε decays linearly."""
    heuristic_prob: float = 0.5
    """KD-D3QN's heuristic-guided exploration: an exploring task takes the ``heuristic``
    policy's action with this probability, else a uniform random one (0 = plain ε-greedy)."""
    heuristic: str = "greedy"
    """Policy of ``common.mec.policies`` that guides exploration."""
    grad_clip: float = 10.0
    """Max global gradient norm."""
    reward_scale: float = 0.1
    """Rewards are multiplied by this before learning (QoE rewards are O(10–40))."""

    def validate(self, where: str = "d3qn") -> D3QNConfig:
        for name in ("episodes", "parallel_episodes", "batch_size", "buffer_size", "target_every"):
            check_positive_int(getattr(self, name), f"{where}.{name}")
        if not isinstance(self.updates_per_episode, int) or self.updates_per_episode < 0:
            raise ConfigError(f"{where}.updates_per_episode must be an integer >= 0")
        for name in ("gamma", "eps_start", "eps_end", "eps_decay_fraction", "heuristic_prob"):
            check_unit(getattr(self, name), f"{where}.{name}")
        for name in ("lr", "grad_clip", "reward_scale"):
            check_positive(getattr(self, name), f"{where}.{name}")
        return self


def d3qn_from_dict(raw: Any, where: str = "d3qn") -> D3QNConfig:
    """Build and validate a :class:`D3QNConfig`."""
    return build(D3QNConfig, to_dict(raw), where).validate(where)


@dataclass
class D3QNResult:
    """A trained Q-network and its learning curves."""

    net: nn.Module
    episode_qoe: list[float] = field(default_factory=list)
    """Mean QoE per task of each batch of training episodes (with exploration)."""
    losses: list[float] = field(default_factory=list)
    """Huber TD loss of every optimiser step."""


class ReplayMemory:
    """A ring buffer of (s, a, r, s', done) with s = (features, history), normalised."""

    def __init__(self, size: int, n_features: int, history_shape: tuple[int, int]) -> None:
        self.size, self.pos, self.full = size, 0, False
        self.f = np.zeros((size, n_features), np.float32)
        self.h = np.zeros((size, *history_shape), np.float32)
        self.a = np.zeros(size, np.int64)
        self.r = np.zeros(size, np.float32)
        self.f2 = np.zeros_like(self.f)
        self.h2 = np.zeros_like(self.h)
        self.done = np.zeros(size, np.float32)

    def __len__(self) -> int:
        return self.size if self.full else self.pos

    def add(self, f, h, a, r, f2, h2, done) -> None:
        for i in range(0, len(a), self.size):  # more than the buffer at once: keep the newest
            self._add(*(x[i : i + self.size] for x in (f, h, a, r, f2, h2, done)))

    def _add(self, f, h, a, r, f2, h2, done) -> None:
        idx = (self.pos + np.arange(len(a))) % self.size
        self.f[idx], self.h[idx], self.a[idx], self.r[idx] = f, h, a, r
        self.f2[idx], self.h2[idx], self.done[idx] = f2, h2, done
        self.full = self.full or self.pos + len(a) >= self.size
        self.pos = int((self.pos + len(a)) % self.size)

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, len(self), batch)
        return tuple(
            torch.from_numpy(x[idx])
            for x in (self.f, self.h, self.a, self.r, self.f2, self.h2, self.done)
        )


def _transitions(feats, hists, mask, actions, rewards):
    """Link each device's consecutive tasks. Inputs are per slot: feats [T, E, N, F], hists
    [T, E, K, M], mask [T, E, N]; actions, rewards [E, T, N]. Returns flat transition arrays."""
    T, E, N = mask.shape
    next_t = np.full((E, N), -1, np.int64)  # slot of the device's next task, scanning backwards
    out = []
    for t in range(T - 1, -1, -1):
        e, n = np.nonzero(mask[t])
        if len(e):
            nt = next_t[e, n]
            has_next = nt >= 0
            nt_safe = np.where(has_next, nt, t)
            out.append((
                feats[t, e, n], hists[t, e], actions[e, t, n], rewards[e, t, n],
                feats[nt_safe, e, n], hists[nt_safe, e], (~has_next).astype(np.float32),
            ))  # fmt: skip
            next_t[e, n] = t
    return [np.concatenate(parts) for parts in zip(*out, strict=True)]


def train_d3qn(
    net: nn.Module,
    scenario: ScenarioConfig,
    cfg: D3QNConfig,
    seed: int,
    log: Callable[[str, float, int], None] | None = None,
    profiles: Sequence[DeviceProfile | None] = (None,),
) -> D3QNResult:
    """Train ``net`` (its outputs are Q-values over actions 0..M) by D3QN, in place.

    Batch ``i`` of episodes runs on devices ``profiles[i % len(profiles)]`` (``None``: the
    scenario's own), e.g. the worlds of a federation's data schedule.

    ``net`` may come pre-trained (e.g. by imitation: a warm start); the target network starts
    as a copy of it.
    """
    # ---- seeding and setup ------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    feat_scale, hist_scale = feature_scale(scenario)
    target = copy.deepcopy(net).eval()
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    memory = ReplayMemory(
        cfg.buffer_size, n_features(scenario.n_edges), (scenario.history_slots, scenario.n_edges)
    )
    heuristic = make_policy(cfg.heuristic) if cfg.heuristic_prob > 0 else None
    result = D3QNResult(net)
    n_actions = scenario.n_edges + 1
    updates = 0
    n_iters = -(-cfg.episodes // cfg.parallel_episodes)

    for it in range(n_iters):
        # ---- ε schedule: linear decay over the first eps_decay_fraction of the episodes --------
        progress = it * cfg.parallel_episodes / max(1.0, cfg.eps_decay_fraction * cfg.episodes)
        epsilon = cfg.eps_start + (cfg.eps_end - cfg.eps_start) * min(1.0, progress)

        # ---- play a batch of episodes -----------------------------------------------------
        sim = MECBatch(scenario, cfg.parallel_episodes, profiles[it % len(profiles)])
        obs = sim.reset(seed=seed * 100003 + it)
        feats, hists, masks = [], [], []
        net.eval()
        while not sim.done:
            f = obs.features / feat_scale
            h = obs.history / hist_scale
            with torch.inference_mode():
                q = net(
                    torch.from_numpy(f.reshape(-1, f.shape[-1]).astype(np.float32)),
                    torch.from_numpy(np.repeat(h, sim.N, axis=0).astype(np.float32)),
                )
            actions = q.argmax(1).numpy().reshape(sim.E, sim.N)
            explore = rng.random(actions.shape) < epsilon
            random_actions = rng.integers(0, n_actions, actions.shape)
            if heuristic is not None:
                guided = rng.random(actions.shape) < cfg.heuristic_prob
                random_actions = np.where(guided, heuristic(obs, sim), random_actions)
            actions = np.where(explore, random_actions, actions)
            feats.append(f.astype(np.float32))
            hists.append(h.astype(np.float32))
            masks.append(obs.mask)
            obs, _ = sim.step(actions)
        qoe = sim.metrics()["qoe"]
        result.episode_qoe.append(qoe)

        # ---- rewards are final: store the transitions ------------------------------------------
        f, h, a, r, f2, h2, done = _transitions(
            np.stack(feats), np.stack(hists), np.stack(masks), sim.task_action.astype(np.int64),
            np.nan_to_num(sim.task_reward) * cfg.reward_scale,
        )  # fmt: skip
        memory.add(f, h, a, r, f2, h2, done)

        # ---- learn: double DQN with a target network ---------------------------------------
        net.train()
        for _ in range(cfg.updates_per_episode * cfg.parallel_episodes):
            bf, bh, ba, br, bf2, bh2, bdone = memory.sample(cfg.batch_size, rng)
            with torch.no_grad():
                next_action = net(bf2, bh2).argmax(1, keepdim=True)  # online net selects
                next_q = target(bf2, bh2).gather(1, next_action).squeeze(1)  # target evaluates
                td_target = br + cfg.gamma * (1.0 - bdone) * next_q
            q_taken = net(bf, bh).gather(1, ba.view(-1, 1)).squeeze(1)
            loss = F.smooth_l1_loss(q_taken, td_target)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            optimizer.step()
            result.losses.append(float(loss.detach()))
            updates += 1
            if updates % cfg.target_every == 0:
                target.load_state_dict(net.state_dict())
        net.eval()
        if log is not None:
            step = (it + 1) * cfg.parallel_episodes
            log("charts/train_qoe", qoe, step)
            log("charts/epsilon", epsilon, step)
            if result.losses:
                log("losses/td_loss", float(np.mean(result.losses[-50:])), step)
    return result

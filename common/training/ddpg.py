"""DDPG-based offloading (KECO's DRL comparison, Lillicrap et al. 2015), one actor and one critic
shared by all devices, trained on the simulator's QoE reward.

DDPG is a continuous-control method; the offloading decision is discrete. The usual bridge: the
actor outputs one bounded score per action (``tanh``, so in [-1, 1]) and the device takes the
best-scored action. Read top to bottom, like CleanRL's ``ddpg_continuous_action.py``:

1. simulate ``parallel_episodes`` episodes; every task's device takes
   ``argmax(μ(s) + N(0, σ²))`` with σ decaying linearly from ``noise_start`` to ``noise_end``
   over the first ``noise_decay_fraction`` of the episodes;
2. once the episodes end, every task's QoE reward is final; a device's transition links a task's
   state to the state at the device's next task (:func:`common.training.d3qn._transitions`),
   and the stored action is the *noisy score vector* that was executed;
3. take ``updates_per_episode`` optimiser steps per simulated episode: the critic regresses
   ``Q(s, a)`` on ``r + γ · Q'(s', μ'(s'))`` (target networks), then the actor ascends
   ``Q(s, μ(s))`` minus a small penalty on its pre-``tanh`` scores (:data:`PREACT_L2`);
4. after every step both target networks move towards the online ones by Polyak averaging
   (``θ' ← τ θ + (1 − τ) θ'``).

The trained actor has the ``net(features, history) -> scores`` interface of ``common.models``,
so :class:`common.models.NetPolicy` (argmax of the scores) evaluates it like any other network.

Known weakness, kept because it is what DDPG is: the policy is deterministic and shared, and
devices that see similar states pick the same node. During training the exploration noise
spreads them (on ``keco`` the noisy policy reaches QoE ≈ 32, above ``random``), but the
noise-free argmax herds onto few nodes and scores far lower (≈ 20 with the defaults).
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
    as_ints,
    build,
    check_positive,
    check_positive_int,
    check_unit,
    finite,
    to_dict,
)
from common.mec import DeviceProfile, MECBatch, feature_scale, n_features
from common.mec.scenario import ScenarioConfig
from common.training.d3qn import ReplayMemory, _transitions


@dataclass(frozen=True)
class DDPGConfig:
    """DDPG-based offloading (KECO's DRL comparison): an actor scores every action (continuous
    outputs), the device takes the best-scored one; a critic Q(s, scores) learns from the
    simulator's per-task rewards and the actor follows the critic's gradient."""

    episodes: int = 60
    """Training episodes in total (simulated ``parallel_episodes`` at a time)."""
    parallel_episodes: int = 4
    """Episodes simulated at once between learning phases."""
    gamma: float = 0.3
    """Discount between a device's consecutive tasks. Lower than D3QN's 0.9: with 0.9 the critic
    overestimated (Q above the largest possible return) and 5 seeds on ``seed001`` averaged QoE 17
    (7..24); with 0.3 (and the smaller buffer below) 4 seeds gave 23.5..26.4."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic."""
    batch_size: int = 256
    """Transitions per optimiser step."""
    buffer_size: int = 20000
    """Replay memory, transitions (about 3 batches of 4 ``seed001`` episodes). The other devices
    are part of each device's environment and change with the shared actor, so old transitions
    describe a different environment; a short memory made training less erratic."""
    updates_per_episode: int = 40
    """Optimiser steps (critic and actor) after each simulated episode."""
    tau: float = 0.01
    """Polyak factor of the soft target updates."""
    noise_start: float = 0.5
    """Std of the Gaussian exploration noise added to the action scores at the first episode."""
    noise_end: float = 0.05
    """Noise std after ``noise_decay_fraction`` of the episodes."""
    noise_decay_fraction: float = 0.6
    """Fraction of the episodes over which the noise decays linearly."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of the actor and the critic MLPs."""
    grad_clip: float = 10.0
    """Max global gradient norm."""
    reward_scale: float = 0.1
    """Rewards are multiplied by this before learning."""

    def validate(self, where: str = "ddpg") -> DDPGConfig:
        for name in ("episodes", "parallel_episodes", "batch_size", "buffer_size"):
            check_positive_int(getattr(self, name), f"{where}.{name}")
        if not isinstance(self.updates_per_episode, int) or self.updates_per_episode < 0:
            raise ConfigError(f"{where}.updates_per_episode must be an integer >= 0")
        for name in ("gamma", "tau", "noise_decay_fraction"):
            check_unit(getattr(self, name), f"{where}.{name}")
        for name in ("actor_lr", "critic_lr", "grad_clip", "reward_scale"):
            check_positive(getattr(self, name), f"{where}.{name}")
        for name in ("noise_start", "noise_end"):
            if not finite(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name} must be >= 0, got {getattr(self, name)!r}")
        object.__setattr__(self, "hidden", as_ints(self.hidden, f"{where}.hidden"))
        return self


def ddpg_from_dict(raw: Any, where: str = "ddpg") -> DDPGConfig:
    """Build and validate a :class:`DDPGConfig`."""
    return build(DDPGConfig, to_dict(raw), where).validate(where)


PREACT_L2 = 0.02
"""Weight of the actor's penalty on its squared pre-``tanh`` scores (summed over the actions,
averaged over the batch, so its strength does not depend on the number of edge nodes). Without
it the critic's gradient drives the scores into ``tanh`` saturation within a few episodes:
several actions sit at ±1, the argmax between them is decided by rounding, the exploration noise
can no longer flip it, and on ``seed001`` the policy collapsed to all-local (QoE 11.5 vs 25 for
random). It is the ``action_l2`` term of OpenAI Baselines' HER DDPG, put on the pre-``tanh``
values so that it still pulls a saturated score back (``tanh`` passes no gradient there)."""


def _mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    last = nn.Linear(in_dim, out_dim)
    # DDPG's final-layer init: outputs start near 0, so early actions come from the noise and
    # the critic's first targets are not dominated by arbitrary initial estimates
    nn.init.uniform_(last.weight, -3e-3, 3e-3)
    nn.init.uniform_(last.bias, -3e-3, 3e-3)
    return nn.Sequential(*layers, last)


class DDPGActor(nn.Module):
    """μ(s): an MLP over the normalised features and the flattened EN-load history → one score
    in [-1, 1] per action ``0..M``; the action is the argmax."""

    def __init__(self, n_features: int, history_slots: int, n_edges: int, hidden: tuple[int, ...]):
        super().__init__()
        self.body = _mlp(n_features + history_slots * n_edges, tuple(hidden), n_edges + 1)

    def preactivation(self, features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """The scores before the ``tanh``."""
        return self.body(torch.cat([features, history.flatten(1)], dim=1))

    def forward(self, features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.preactivation(features, history))


class DDPGCritic(nn.Module):
    """Q(s, a): an MLP over the normalised state and the action-score vector → one value."""

    def __init__(self, n_features: int, history_slots: int, n_edges: int, hidden: tuple[int, ...]):
        super().__init__()
        in_dim = n_features + history_slots * n_edges + n_edges + 1
        self.body = _mlp(in_dim, tuple(hidden), 1)

    def forward(
        self, features: torch.Tensor, history: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        return self.body(torch.cat([features, history.flatten(1), scores], dim=1)).squeeze(1)


@dataclass
class DDPGResult:
    """A trained actor (and its critic) and the learning curves."""

    actor: nn.Module
    """μ(s) → scores over actions 0..M; wrap in :class:`common.models.NetPolicy` to act."""
    critic: nn.Module
    """Q(s, scores), kept for inspection and warm starts."""
    episode_qoe: list[float] = field(default_factory=list)
    """Mean QoE per task of each batch of training episodes (with exploration noise)."""
    noise: list[float] = field(default_factory=list)
    """Exploration std used for each batch of training episodes."""
    critic_losses: list[float] = field(default_factory=list)
    """MSE TD loss of every optimiser step."""
    actor_losses: list[float] = field(default_factory=list)
    """Actor objective −Q(s, μ(s)) + the pre-``tanh`` penalty, of every optimiser step."""

    @property
    def net(self) -> nn.Module:
        """The actor, under the name the other training results use."""
        return self.actor


def noise_std(cfg: DDPGConfig, episodes_done: int) -> float:
    """Exploration std after ``episodes_done`` training episodes: linear from ``noise_start``
    to ``noise_end`` over the first ``noise_decay_fraction`` of ``cfg.episodes``, then flat."""
    progress = episodes_done / max(1.0, cfg.noise_decay_fraction * cfg.episodes)
    return cfg.noise_start + (cfg.noise_end - cfg.noise_start) * min(1.0, progress)


def build_actor(scenario: ScenarioConfig, cfg: DDPGConfig) -> DDPGActor:
    """The actor network for ``scenario``'s input sizes (uses torch's global RNG)."""
    m = scenario.n_edges
    return DDPGActor(n_features(m), scenario.history_slots, m, cfg.hidden)


class _ScoreMemory(ReplayMemory):
    """D3QN's replay memory with a float score vector as the action instead of an index."""

    def __init__(self, size: int, n_features: int, history_shape: tuple[int, int], n_actions: int):
        super().__init__(size, n_features, history_shape)
        self.a = np.zeros((size, n_actions), np.float32)


def _soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.lerp_(o, tau)


def train_ddpg(
    scenario: ScenarioConfig,
    cfg: DDPGConfig,
    seed: int,
    log: Callable[[str, float, int], None] | None = None,
    profiles: Sequence[DeviceProfile | None] = (None,),
) -> DDPGResult:
    """Train a DDPG actor and critic for ``scenario`` from scratch (module docstring); batch
    ``i`` of episodes runs on devices ``profiles[i % len(profiles)]`` (``None``: the
    scenario's own)."""
    # ---- seeding and setup ------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    feat_scale, hist_scale = feature_scale(scenario)
    m, k = scenario.n_edges, scenario.history_slots
    n_actions = m + 1
    actor = build_actor(scenario, cfg)
    critic = DDPGCritic(n_features(m), k, m, cfg.hidden)
    actor_target = copy.deepcopy(actor).eval()
    critic_target = copy.deepcopy(critic).eval()
    actor_opt = torch.optim.Adam(actor.parameters(), lr=cfg.actor_lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
    memory = _ScoreMemory(cfg.buffer_size, n_features(m), (k, m), n_actions)
    result = DDPGResult(actor, critic)
    n_iters = -(-cfg.episodes // cfg.parallel_episodes)

    for it in range(n_iters):
        sigma = noise_std(cfg, it * cfg.parallel_episodes)
        result.noise.append(sigma)

        # ---- play a batch of episodes with noisy scores -------------------------------------
        sim = MECBatch(scenario, cfg.parallel_episodes, profiles[it % len(profiles)])
        obs = sim.reset(seed=seed * 100003 + it)
        feats, hists, masks, scores_t = [], [], [], []
        actor.eval()
        while not sim.done:
            f = (obs.features / feat_scale).astype(np.float32)
            h = (obs.history / hist_scale).astype(np.float32)
            scores = np.zeros((sim.E, sim.N, n_actions), np.float32)
            e, n = np.nonzero(obs.mask)
            if len(e):  # only devices with a new task decide (and draw noise)
                with torch.inference_mode():
                    mu = actor(torch.from_numpy(f[e, n]), torch.from_numpy(h[e])).numpy()
                scores[e, n] = mu + sigma * rng.standard_normal(mu.shape).astype(np.float32)
            feats.append(f)
            hists.append(h)
            masks.append(obs.mask)
            scores_t.append(scores)
            obs, _ = sim.step(scores.argmax(-1))
        qoe = sim.metrics()["qoe"]
        result.episode_qoe.append(qoe)

        # ---- rewards are final: store the transitions (action = executed score vector) -------
        if any(mask.any() for mask in masks):  # tiny arrival rates can leave a batch empty
            f, h, a, r, f2, h2, done = _transitions(
                np.stack(feats), np.stack(hists), np.stack(masks),
                np.stack(scores_t).transpose(1, 0, 2, 3),  # [E, T, N, A], as _transitions indexes
                np.nan_to_num(sim.task_reward) * cfg.reward_scale,
            )  # fmt: skip
            memory.add(f, h, a, r, f2, h2, done)

        # ---- learn: critic on the TD target, actor on the critic, Polyak targets ------------
        actor.train()
        n_updates = cfg.updates_per_episode * cfg.parallel_episodes if len(memory) else 0
        for _ in range(n_updates):
            bf, bh, ba, br, bf2, bh2, bdone = memory.sample(cfg.batch_size, rng)
            with torch.no_grad():
                next_q = critic_target(bf2, bh2, actor_target(bf2, bh2))
                td_target = br + cfg.gamma * (1.0 - bdone) * next_q
            critic_loss = F.mse_loss(critic(bf, bh, ba), td_target)
            critic_opt.zero_grad()
            critic_loss.backward()
            nn.utils.clip_grad_norm_(critic.parameters(), cfg.grad_clip)
            critic_opt.step()

            pre = actor.preactivation(bf, bh)
            penalty = PREACT_L2 * pre.pow(2).sum(1).mean()
            actor_loss = -critic(bf, bh, torch.tanh(pre)).mean() + penalty
            actor_opt.zero_grad()
            actor_loss.backward()  # also fills the critic's grads; zeroed before its next step
            nn.utils.clip_grad_norm_(actor.parameters(), cfg.grad_clip)
            actor_opt.step()

            _soft_update(critic_target, critic, cfg.tau)
            _soft_update(actor_target, actor, cfg.tau)
            result.critic_losses.append(float(critic_loss.detach()))
            result.actor_losses.append(float(actor_loss.detach()))
        actor.eval()
        if log is not None:
            step = (it + 1) * cfg.parallel_episodes
            log("charts/train_qoe", qoe, step)
            log("charts/noise_std", sigma, step)
            if result.critic_losses:
                log("losses/critic_loss", float(np.mean(result.critic_losses[-50:])), step)
                log("losses/actor_loss", float(np.mean(result.actor_losses[-50:])), step)
    return result

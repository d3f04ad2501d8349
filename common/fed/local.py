"""The KECO local round of one client, and its persistent state (plain torch + numpy).

Per round a client: loads the global student ``W_t`` and soft labels ``G_t``; simulates fresh
episodes on its own devices with the student as behaviour policy (plus a little exploration);
labels every task with the oracle and appends it to a bounded buffer (incremental learning);
computes its per-class mean logits ``G^i`` with the teacher (or the student); decides with the
compute-time model whether it meets the round's deadline; and, if so, trains the student on the
buffer with the KECO loss ``δ·CE(label) + (1−δ)·T²·KL(G_t[label] ‖ student)``.

Late clients (set y) upload logits only: fresh ones (set v) when producing the logits fits the
deadline, otherwise the stale ones of their last round (set u).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.config import FederatedRunConfig, ModelConfig, ScenarioConfig
from common.distill import class_mean_logits, keco_loss
from common.fed.profiles import ClientProfile, compute_seconds
from common.mec import Observation, collect_dataset, evaluate_policy, feature_scale
from common.mec.policies import oracle
from common.models import (
    NetPolicy,
    build_for_scenario,
    count_params,
    flatten_params,
    unflatten_params,
)
from common.training import fit

ROLE_ON_TIME, ROLE_STALE, ROLE_FRESH = "x", "u", "v"

GRID_BITS = 14
"""Decrypted global values are mapped to cells of width 2^-14 (see :func:`canonical`)."""
GRID_PHASE = 0.3183098861837907
"""Offset (1/π) of the cell boundaries: not a dyadic or decimal fraction (see below)."""


def canonical(values: np.ndarray) -> np.ndarray:
    """Map decrypted global values to the centres of cells of width 2^-14.

    CKKS decryption adds ~1e-13 of noise after the division by Σ n_i, and float32 training
    amplifies any difference in the starting weights, so without this an encrypted and a
    plaintext run drift apart round after round. The cells are far wider than the noise and far
    narrower than anything learning notices (Adam steps are ~1e-3), so both modes give clients
    the same bits. The boundaries sit at ``(m − 1/π)·2^-14``, not at dyadic points: weighted
    means of float32 weights with equal n_i are short dyadic/decimal fractions that plain
    rounding boundaries (``(m + ½)·2^-14``) can hit exactly, where noise would decide the side.
    """
    scaled = np.asarray(values, dtype=np.float64) * 2.0**GRID_BITS
    return (np.floor(scaled + GRID_PHASE) + 0.5 - GRID_PHASE) / 2.0**GRID_BITS


def round_seed(seed: int, partition_id: int, server_round: int, purpose: int) -> int:
    """A seed for one purpose of one client in one round (independent streams)."""
    return int(
        np.random.SeedSequence([seed, partition_id, server_round, purpose]).generate_state(1)[0]
    )


def build_student(cfg: FederatedRunConfig, weights: np.ndarray | None = None) -> nn.Module:
    """The student network of the run, optionally loaded with a flat weight vector."""
    net = build_for_scenario(cfg.student, cfg.scenario)
    if weights is not None:
        unflatten_params(net, weights)
    net.eval()
    return net


def initial_weights(cfg: FederatedRunConfig) -> np.ndarray:
    """W_0: the seeded student initialisation every party derives the same way."""
    torch.manual_seed(cfg.seed)
    return flatten_params(build_for_scenario(cfg.student, cfg.scenario))


def save_teacher(path: str | Path, net: nn.Module) -> None:
    torch.save(net.state_dict(), Path(path))


def load_teacher(path: str | Path, model: ModelConfig, scenario: ScenarioConfig) -> nn.Module:
    """Load the teacher shipped with the run (public: trained on proxy data only)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"teacher file {path} not found; the run directory must hold the teacher trained "
            f"before the federation (experiments.run creates it)"
        )
    net = build_for_scenario(model, scenario)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    return net


@dataclass
class LocalState:
    """What a client keeps between rounds: its buffer and its last logits (for set u)."""

    features: np.ndarray
    history: np.ndarray
    label: np.ndarray
    stale_table: np.ndarray | None = None
    stale_n: int = 0
    stale_round: int = 0
    model: np.ndarray | None = None
    """The client's own flat student (``feddistill``: weights never leave the device)."""

    @classmethod
    def empty(cls, scenario: ScenarioConfig) -> LocalState:
        m, k = scenario.n_edges, scenario.history_slots
        return cls(
            np.zeros((0, m + 4), np.float32), np.zeros((0, k, m), np.float32), np.zeros(0, np.int64)
        )

    def append(self, features: np.ndarray, history: np.ndarray, label: np.ndarray, cap: int):
        """Add new samples; keep the newest ``cap`` (incremental learning, bounded memory)."""
        self.features = np.concatenate([self.features, features])[-cap:]
        self.history = np.concatenate([self.history, history])[-cap:]
        self.label = np.concatenate([self.label, label])[-cap:]

    def save(self, path: str | Path) -> None:
        extra = {}
        if self.stale_table is not None:
            extra["stale_table"] = self.stale_table
        if self.model is not None:
            extra["model"] = self.model
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp.npz")  # hidden: never mistaken for a state
        np.savez(
            tmp, features=self.features, history=self.history, label=self.label,
            stale_n=self.stale_n, stale_round=self.stale_round, **extra,
        )  # fmt: skip
        tmp.replace(path)  # atomic: a crash never leaves half a state

    @classmethod
    def load(cls, path: str | Path, scenario: ScenarioConfig) -> LocalState:
        if not Path(path).exists():
            return cls.empty(scenario)
        with np.load(path) as z:
            return cls(
                z["features"], z["history"], z["label"],
                z["stale_table"] if "stale_table" in z else None,
                int(z["stale_n"]), int(z["stale_round"]),
                z["model"] if "model" in z else None,
            )  # fmt: skip


class Behaviour:
    """Data-collection policy: each decision follows the oracle with probability ``expert``
    (DAgger's β mixing, so the buffer covers the states a good policy visits), a random action
    with probability ``eps``, and the student otherwise (its own states)."""

    def __init__(self, student: NetPolicy, expert: float, eps: float, seed: int) -> None:
        self.student, self.expert, self.eps = student, expert, eps
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: Observation, sim) -> np.ndarray:
        actions = self.student(obs, sim)
        u = self.rng.random(actions.shape)
        if self.expert > 0:
            actions = np.where(u < self.expert, oracle(obs, sim), actions)
        rand = self.rng.integers(0, sim.n_actions, actions.shape)
        return np.where((u >= self.expert) & (u < self.expert + self.eps), rand, actions)


@dataclass
class RoundResult:
    """What a client reports after its local round."""

    role: str
    num_examples: int
    soft_labels: np.ndarray
    """The (M+1)×(M+1) table to upload (fresh, or stale for role u)."""
    logits_round: int
    model: np.ndarray | None = None
    """Flat trained student (role x only)."""
    metrics: dict[str, float] = field(default_factory=dict)


def train_round(
    cfg: FederatedRunConfig,
    profile: ClientProfile,
    state: LocalState,
    weights: np.ndarray,
    soft_labels: np.ndarray,
    *,
    server_round: int,
    delta: float,
    temperature: float,
    deadline_s: float,
    teacher: nn.Module | None,
) -> RoundResult:
    """One KECO local round (module docstring); updates ``state`` in place."""
    sc, local = cfg.scenario, cfg.strategy.local
    pid = profile.partition_id
    torch.manual_seed(round_seed(cfg.seed, pid, server_round, 0))
    feat_scale, hist_scale = feature_scale(sc)
    student = build_student(cfg, weights)

    # fresh episodes on this client's devices, labelled by the oracle
    behaviour = Behaviour(
        NetPolicy(student, feat_scale, hist_scale), local.expert_mix, local.explore,
        round_seed(cfg.seed, pid, server_round, 1),
    )  # fmt: skip
    data = collect_dataset(
        sc, behaviour, local.episodes, round_seed(cfg.seed, pid, server_round, 2),
        batch=local.episodes, profile=profile.devices,
    )  # fmt: skip
    state.append(data.features, data.history, data.label, local.buffer_size)
    n = len(state.label)
    f = torch.from_numpy(state.features / feat_scale).float()
    h = torch.from_numpy(state.history / hist_scale).float()
    y = torch.from_numpy(state.label).long()
    n_classes = soft_labels.shape[0]

    logit_net = teacher if (local.logits_source == "teacher" and teacher is not None) else student
    t_logits, t_train = compute_seconds(
        n, local.epochs, count_params(student), count_params(logit_net), profile.speed_gflops
    )
    if t_train <= deadline_s:
        role = ROLE_ON_TIME
    elif t_logits <= deadline_s or state.stale_table is None:
        role = ROLE_FRESH
    else:
        role = ROLE_STALE

    metrics: dict[str, float] = {
        "compute_s": t_train if role == ROLE_ON_TIME else t_logits,
        "samples_new": float(len(data.label)),
        "buffer": float(n),
    }
    model = None
    if role == ROLE_ON_TIME and cfg.strategy.name == "fedmeta2ag":
        from common.fed.maml import meta_train

        meta = cfg.strategy.meta
        losses = meta_train(
            student, f, h, y, inner_steps=meta.inner_steps, inner_lr=meta.inner_lr,
            outer_lr=meta.outer_lr, tasks=meta.tasks, batch_size=local.batch_size,
            seed=round_seed(cfg.seed, pid, server_round, 3),
        )  # fmt: skip
        metrics["train_loss"] = float(np.mean(losses[-max(1, len(losses) // 4) :]))
        model = flatten_params(student)
    elif role == ROLE_ON_TIME:
        g = torch.from_numpy(np.asarray(soft_labels, dtype=np.float32))

        def loss_fn(net: nn.Module, idx: torch.Tensor, step: int) -> torch.Tensor:
            return keco_loss(net(f[idx], h[idx]), y[idx], g, delta, temperature)

        steps = max(1, math.ceil(n * local.epochs / local.batch_size))
        losses = fit(
            student, n, loss_fn, steps, local.batch_size, local.lr,
            round_seed(cfg.seed, pid, server_round, 3),
        )  # fmt: skip
        tail = losses[-max(1, steps // local.epochs) :]
        metrics["train_loss"] = float(np.mean(tail))
        model = flatten_params(student)
    with torch.inference_mode():
        pred = student(f, h).argmax(1)
        metrics["train_accuracy"] = float((pred == y).float().mean())

    if role == ROLE_STALE:
        table, n_up, logits_round = state.stale_table, state.stale_n, state.stale_round
    else:
        with torch.inference_mode():
            logits = logit_net(f, h)
        table_t, counts = class_mean_logits(logits, y, n_classes)
        table = table_t.numpy()
        # classes this client never saw keep the global soft label (no pull either way)
        table[counts.numpy() == 0] = np.asarray(soft_labels)[counts.numpy() == 0]
        n_up, logits_round = n, server_round
        state.stale_table, state.stale_n, state.stale_round = table, n, server_round
    return RoundResult(role, int(n_up), np.asarray(table, np.float64), logits_round, model, metrics)


def evaluate_student(
    cfg: FederatedRunConfig,
    profile: ClientProfile,
    weights: np.ndarray,
    server_round: int,
    state: LocalState | None = None,
) -> dict[str, float]:
    """The student on fresh episodes of this client's devices (§3 metrics).

    Under ``fedmeta2ag`` the client first fine-tunes the global meta-model on its buffer
    (``state``): MAML's meta-test, the personalisation the method is built for.
    """
    feat_scale, hist_scale = feature_scale(cfg.scenario)
    net = build_student(cfg, weights)
    meta = cfg.strategy.meta
    if cfg.strategy.name == "fedmeta2ag" and state is not None and len(state.label):
        if meta.adapt_steps > 0:
            from common.fed.maml import adapt

            net = adapt(
                net, torch.from_numpy(state.features / feat_scale).float(),
                torch.from_numpy(state.history / hist_scale).float(),
                torch.from_numpy(state.label).long(), steps=meta.adapt_steps, lr=meta.adapt_lr,
                batch_size=cfg.strategy.local.batch_size,
                seed=round_seed(cfg.seed, profile.partition_id, server_round, 5),
            )  # fmt: skip
    policy = NetPolicy(net, feat_scale, hist_scale)
    seed = round_seed(cfg.seed, profile.partition_id, server_round, 4)
    return evaluate_policy(
        cfg.scenario, policy, cfg.strategy.local.eval_episodes, seed,
        batch=cfg.strategy.local.eval_episodes, profile=profile.devices,
    )  # fmt: skip

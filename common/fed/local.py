"""The KECO local round of one client, and its persistent state (plain torch + numpy).

Per round a client: loads the global student ``W_t`` and soft labels ``G_t``; simulates fresh
episodes on its own devices (the data schedule: each episode at one of the training loads, the
behaviour policy following the oracle with a probability β_t that decays over rounds, the
student otherwise, plus a little exploration); labels every task with the oracle's predicted
cost of every action and appends it to a bounded buffer (incremental learning); computes its
knowledge ``G^i`` with the teacher (or the student): its logits on the shared proxy set
(:mod:`common.fed.proxy`), or, the ablation, its per-class mean logits; decides with the
compute-time model whether it meets the round's deadline; and, if so, trains the student on the
buffer with the KECO loss ``δ·CE(q) + w·KL(G_t ‖ student)`` (``q`` the oracle's cost-aware
targets; the soft term on proxy states against their rows of ``G_t``, or on the buffer against
``G_t[label]``; ``w = min((1−δ)·T², soft_cap·δ)``; none in round 1, before any ``G`` exists),
each minibatch under a random relabelling of the edge nodes.

Late clients (set y) upload logits only: fresh ones (set v) when producing the logits fits the
deadline, otherwise the stale ones of their last round (set u).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.distill import (
    class_mean_logits,
    cost_targets,
    keco_loss,
    schedule_value,
    soft_kl,
)
from common.fed.profiles import ClientProfile, compute_seconds
from common.fed.proxy import proxy_logits, proxy_tensors
from common.fed.settings import PLAINTEXT_STRATEGIES, FederatedRunConfig
from common.mec import (
    DeviceProfile,
    MECBatch,
    Observation,
    TaskDataset,
    collect_dataset,
    evaluate_policy,
    feature_scale,
    n_features,
)
from common.mec.policies import oracle
from common.mec.scenario import ScenarioConfig
from common.models import (
    NetPolicy,
    build_for_scenario,
    count_params,
    flatten_params,
    unflatten_params,
)
from common.models.nets import ModelConfig
from common.protocol import (
    COMPUTE_KEY,
    EPISODES_KEY,
    ROLE_FRESH,
    ROLE_ON_TIME,
    ROLE_STALE,
    TRAIN_ACCURACY_KEY,
    TRAIN_LOSS_KEY,
    TRAIN_STEPS_KEY,
)
from common.training import fit, permute_edges_batch


def knowledge_shape(cfg: FederatedRunConfig) -> tuple[int, int]:
    """Shape of the soft-label knowledge G: (proxy size, M + 1) or the (M + 1)² class table."""
    classes = cfg.scenario.n_edges + 1
    rows = cfg.strategy.proxy.size if cfg.strategy.knowledge == "proxy" else classes
    return rows, classes


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
    costs: np.ndarray
    """[n, M + 1] the oracle's predicted cost of every action (the targets come from it)."""
    logits: np.ndarray | None = None
    """[n, M + 1] the frozen teacher's logits of each row (NaN: not computed yet), a cache."""
    stale_table: np.ndarray | None = None
    stale_n: int = 0
    stale_round: int = 0
    model: np.ndarray | None = None
    """The client's own flat student (``feddistill``: weights never leave the device)."""

    @classmethod
    def empty(cls, scenario: ScenarioConfig) -> LocalState:
        m, k = scenario.n_edges, scenario.history_slots
        return cls(
            np.zeros((0, n_features(m)), np.float32), np.zeros((0, k, m), np.float32),
            np.zeros(0, np.int64), np.zeros((0, m + 1), np.float32),
        )  # fmt: skip

    def append(self, data: TaskDataset, cap: int) -> None:
        """Add new samples; keep the newest ``cap`` (incremental learning, bounded memory)."""
        self.features = np.concatenate([self.features, data.features])[-cap:]
        self.history = np.concatenate([self.history, data.history])[-cap:]
        self.label = np.concatenate([self.label, data.label])[-cap:]
        self.costs = np.concatenate([self.costs, data.costs])[-cap:]
        if self.logits is not None:
            fresh = np.full((len(data.label), self.logits.shape[1]), np.nan, np.float32)
            self.logits = np.concatenate([self.logits, fresh])[-cap:]

    def save(self, path: str | Path) -> None:
        extra = {}
        if self.logits is not None:
            extra["logits"] = self.logits
        if self.stale_table is not None:
            extra["stale_table"] = self.stale_table
        if self.model is not None:
            extra["model"] = self.model
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp.npz")  # hidden: never mistaken for a state
        np.savez(
            tmp, features=self.features, history=self.history, label=self.label,
            costs=self.costs, stale_n=self.stale_n, stale_round=self.stale_round, **extra,
        )  # fmt: skip
        tmp.replace(path)  # atomic: a crash never leaves half a state

    @classmethod
    def load(cls, path: str | Path, scenario: ScenarioConfig) -> LocalState:
        if not Path(path).exists():
            return cls.empty(scenario)
        with np.load(path) as z:
            return cls(
                z["features"], z["history"], z["label"], z["costs"],
                z["logits"] if "logits" in z else None,
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
    soft_labels: np.ndarray | None
    """The knowledge to upload (fresh, or stale for role u): the per-class table or the logits
    on the proxy set; ``None`` under the weight-only strategies (``fedavg``, ``fedmeta2ag``)."""
    logits_round: int
    model: np.ndarray | None = None
    """Flat trained student (role x only)."""
    metrics: dict[str, float] = field(default_factory=dict)


def round_loads(cfg: FederatedRunConfig, partition_id: int, server_round: int) -> list[float]:
    """The load multiplier of each episode a client simulates in a round: the training loads
    cycled over rounds and clients (so every load is seen every few rounds), or 1."""
    local = cfg.strategy.local
    if local.train_loads is None:
        return [1.0] * local.episodes
    loads = local.train_loads
    first = (server_round - 1) * local.episodes + partition_id
    return [loads[(first + e) % len(loads)] for e in range(local.episodes)]


@dataclass(frozen=True)
class World:
    """Episodes a client simulates at one load in one round: its devices at that load, how
    many episodes, and their seed. Tasks arrive the same whatever the devices decide."""

    devices: DeviceProfile
    episodes: int
    seed: int

    def tasks(self, scenario: ScenarioConfig) -> int:
        """How many tasks arrive in these episodes (no stepping: arrivals are drawn up front)."""
        sim = MECBatch(scenario, self.episodes, self.devices)
        sim.reset(seed=self.seed)
        return int((sim.task_size > 0).sum())


def round_worlds(cfg: FederatedRunConfig, profile: ClientProfile, server_round: int) -> list[World]:
    """The worlds of a client's round: its devices at each of :func:`round_loads`."""
    sc = cfg.scenario
    loads = round_loads(cfg, profile.partition_id, server_round)
    worlds = []
    for i, load in enumerate(sorted(set(loads))):  # episodes of one load run together
        devices = profile.devices
        if load != 1.0:
            p = devices.arrival_prob
            p = np.full(sc.n_devices, sc.effective_arrival_prob) if p is None else p
            devices = dataclasses.replace(devices, arrival_prob=np.clip(p * load, 0.0, 1.0))
        seed = round_seed(cfg.seed, profile.partition_id, server_round, 10 + i)
        worlds.append(World(devices, loads.count(load), seed))
    return worlds


def collect_round(
    cfg: FederatedRunConfig, profile: ClientProfile, student: nn.Module, server_round: int
) -> TaskDataset:
    """The round's fresh episodes on this client's devices, labelled by the oracle.

    Each episode runs at its load (:func:`round_worlds`); the behaviour follows the oracle
    with probability β_t (``strategy.local.expert_mix`` at round t), a random action with
    probability ``explore``, and the student otherwise.
    """
    local = cfg.strategy.local
    feat_scale, hist_scale = feature_scale(cfg.scenario)
    beta = schedule_value(local.expert_mix, server_round - 1)
    behaviour = Behaviour(
        NetPolicy(student, feat_scale, hist_scale), beta, local.explore,
        round_seed(cfg.seed, profile.partition_id, server_round, 1),
    )  # fmt: skip
    return TaskDataset.concat(
        [
            collect_dataset(
                cfg.scenario, behaviour, w.episodes, w.seed, batch=w.episodes, profile=w.devices
            )  # fmt: skip
            for w in round_worlds(cfg, profile, server_round)
        ]
    )


def fit_targets(
    net: nn.Module,
    state: LocalState,
    cfg: FederatedRunConfig,
    steps: int,
    seed: int,
    knowledge: np.ndarray | None = None,
    delta: float = 1.0,
    temperature: float = 1.0,
) -> list[float]:
    """Train ``net`` on a buffer for ``steps`` minibatches of the KECO loss: the oracle's
    targets (weight δ) and, with ``knowledge`` (the global soft labels), the soft term of
    :func:`common.distill.keco_loss`: each sample's row ``G[label]`` of the per-class table,
    or a minibatch of proxy states against their rows of ``G`` (``strategy.knowledge``).
    Every minibatch is relabelled by random EN permutations when configured."""
    local, st = cfg.strategy.local, cfg.strategy
    feat_scale, hist_scale = feature_scale(cfg.scenario)
    f = torch.from_numpy(state.features / feat_scale).float()
    h = torch.from_numpy(state.history / hist_scale).float()
    y = torch.from_numpy(state.label).long()
    q = torch.from_numpy(cost_targets(state.costs, local.targets))
    g = None if knowledge is None else torch.from_numpy(np.asarray(knowledge, dtype=np.float32))
    proxy = proxy_tensors(cfg) if g is not None and st.knowledge == "proxy" else None
    augment = np.random.default_rng(seed)
    permute = local.targets.permute_edges
    draw = torch.Generator().manual_seed(seed + 1)

    def loss_fn(model: nn.Module, idx: torch.Tensor, step: int) -> torch.Tensor:
        fb, hb, qb, yb = f[idx], h[idx], q[idx], y[idx]
        if permute:
            fb, hb, qb, yb = permute_edges_batch(fb, hb, qb, yb, augment)
        z = model(fb, hb)
        if g is None:
            return keco_loss(z, qb, None, None, delta, temperature)
        if proxy is None:  # per-class table: the row of each sample's label
            return keco_loss(z, qb, z, g[yb], delta, temperature, st.soft_cap)
        rows = torch.randint(0, len(g), (len(idx),), generator=draw)
        fp, hp, gp = proxy[0][rows], proxy[1][rows], g[rows]
        if permute:
            fp, hp, gp, _ = permute_edges_batch(fp, hp, gp, torch.zeros_like(rows), augment)
        return keco_loss(z, qb, model(fp, hp), gp, delta, temperature, st.soft_cap)

    return fit(net, len(y), loss_fn, steps, local.batch_size, local.lr, seed)


_FROZEN_PROXY: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()
"""A frozen network's logits on a run's proxy set, computed once per process."""


def local_knowledge(
    cfg: FederatedRunConfig,
    net: nn.Module,
    state: LocalState,
    previous: np.ndarray | None,
    frozen: bool = False,
) -> np.ndarray:
    """A client's soft-label knowledge from ``net``: its logits on the proxy set, or the
    per-class mean of its logits on the buffer (classes the buffer lacks keep ``previous``'s
    row, or zeros: no pull either way).

    ``frozen``: ``net`` never changes (the public teacher): its proxy logits are computed once
    per process and its logits on buffer rows once per row (kept in ``state.logits``).
    """
    if cfg.strategy.knowledge == "proxy":
        if not frozen:
            return proxy_logits(cfg, net)
        key = (cfg.scenario, cfg.strategy.proxy, cfg.seed, cfg.strategy.local.train_loads)
        cache = _FROZEN_PROXY.setdefault(net, {})
        if key not in cache:
            cache[key] = proxy_logits(cfg, net)
        return cache[key]
    feat_scale, hist_scale = feature_scale(cfg.scenario)
    n_classes = cfg.scenario.n_edges + 1
    if frozen:
        missing = np.isnan(state.logits[:, 0]) if state.logits is not None else None
        if missing is None:
            state.logits = np.full((len(state.label), n_classes), np.nan, np.float32)
            missing = np.ones(len(state.label), dtype=bool)
        if missing.any():
            f = torch.from_numpy(state.features[missing] / feat_scale).float()
            h = torch.from_numpy(state.history[missing] / hist_scale).float()
            net.eval()
            with torch.inference_mode():
                state.logits[missing] = net(f, h).numpy()
        logits = torch.from_numpy(state.logits)
    else:
        f = torch.from_numpy(state.features / feat_scale).float()
        h = torch.from_numpy(state.history / hist_scale).float()
        net.eval()
        with torch.inference_mode():
            logits = net(f, h)
    table_t, counts = class_mean_logits(logits, torch.from_numpy(state.label).long(), n_classes)
    table = table_t.numpy()
    unseen = counts.numpy() == 0
    table[unseen] = 0.0 if previous is None else np.asarray(previous)[unseen]
    return table


def local_steps(cfg: FederatedRunConfig, samples: int) -> int:
    """Optimiser steps of one local round on a buffer of ``samples`` (epochs over it)."""
    local = cfg.strategy.local
    return max(1, math.ceil(samples * local.epochs / local.batch_size))


def train_on_schedule(
    cfg: FederatedRunConfig,
    net: nn.Module,
    profiles: list[ClientProfile],
    teacher: nn.Module | None = None,
) -> dict[str, int]:
    """Train ``net`` without federation on the federation's data schedule, in place.

    Every round, the episodes that each client of ``profiles`` would simulate (its loads, the
    oracle share β_t, with ``net`` as the student of the behaviour policy) go into one pooled
    buffer of ``len(profiles) × buffer_size`` samples, and ``net`` takes as many optimiser steps
    as those clients would take together (the sum of their local steps). With a ``teacher``
    (the public one KECO's clients use), from round 2 on the loss adds its soft labels as
    KECO's clients get them (the same knowledge, δ_t and T). With every client's profile this
    is the centralised upper bound (the same data and knowledge, no privacy, at least the
    federation's steps); with one profile, a client that learns alone. Returns the budget used:
    ``{"episodes": simulated episodes, "steps": optimiser steps}``.
    """
    local, st = cfg.strategy.local, cfg.strategy
    state = LocalState.empty(cfg.scenario)
    held = [0] * len(profiles)  # what each client's own buffer would hold
    episodes = steps = 0
    first = min(p.partition_id for p in profiles)
    knowledge = None
    for server_round in range(1, cfg.federation.rounds + 1):
        for i, profile in enumerate(profiles):
            data = collect_round(cfg, profile, net, server_round)
            state.append(data, local.buffer_size * len(profiles))
            held[i] = min(local.buffer_size, held[i] + len(data))
            episodes += local.episodes
        round_steps = sum(local_steps(cfg, n) for n in held)
        delta = 1.0 if knowledge is None else schedule_value(st.delta, server_round - 1)
        seed = round_seed(cfg.seed, first, server_round, 6)
        fit_targets(net, state, cfg, round_steps, seed, knowledge, delta, st.temperature)
        steps += round_steps
        if teacher is not None:  # what the next round's global soft labels would hold
            knowledge = local_knowledge(cfg, teacher, state, knowledge, frozen=True)
    return {"episodes": episodes, "steps": steps}


def schedule_budget(cfg: FederatedRunConfig, profiles: list[ClientProfile]) -> dict[str, int]:
    """The data budget of the federation's schedule for ``profiles`` when every client is on
    time every round: ``{"episodes", "steps"}`` (exact: arrivals do not depend on decisions)."""
    local = cfg.strategy.local
    held = [0] * len(profiles)
    episodes = steps = 0
    for server_round in range(1, cfg.federation.rounds + 1):
        for i, profile in enumerate(profiles):
            worlds = round_worlds(cfg, profile, server_round)
            held[i] = min(local.buffer_size, held[i] + sum(w.tasks(cfg.scenario) for w in worlds))
            episodes += sum(w.episodes for w in worlds)
        steps += sum(local_steps(cfg, n) for n in held)
    return {"episodes": episodes, "steps": steps}


def schedule_devices(cfg: FederatedRunConfig, profiles: list[ClientProfile]) -> list[DeviceProfile]:
    """The device profile of every episode of the schedule, in order (round by round, client
    by client): what a learner that is not a federated client simulates to see the same worlds."""
    return [
        w.devices
        for server_round in range(1, cfg.federation.rounds + 1)
        for profile in profiles
        for w in round_worlds(cfg, profile, server_round)
        for _ in range(w.episodes)
    ]


def train_round(
    cfg: FederatedRunConfig,
    profile: ClientProfile,
    state: LocalState,
    weights: np.ndarray,
    knowledge: np.ndarray | None,
    *,
    server_round: int,
    delta: float,
    temperature: float,
    deadline_s: float,
    teacher: nn.Module | None,
) -> RoundResult:
    """One KECO local round (module docstring); updates ``state`` in place.

    ``knowledge`` is the global soft labels G (``None`` before any exist, e.g. in round 1:
    the student then trains on its targets alone)."""
    sc, local = cfg.scenario, cfg.strategy.local
    pid = profile.partition_id
    torch.manual_seed(round_seed(cfg.seed, pid, server_round, 0))
    feat_scale, hist_scale = feature_scale(sc)
    student = build_student(cfg, weights)

    data = collect_round(cfg, profile, student, server_round)
    state.append(data, local.buffer_size)
    n = len(state.label)
    f = torch.from_numpy(state.features / feat_scale).float()
    h = torch.from_numpy(state.history / hist_scale).float()
    y = torch.from_numpy(state.label).long()
    proxy = cfg.strategy.knowledge == "proxy"
    plain = cfg.strategy.name in PLAINTEXT_STRATEGIES  # weights only: no knowledge to upload

    logit_net = teacher if (local.logits_source == "teacher" and teacher is not None) else student
    t_logits, t_train = compute_seconds(
        n, local.epochs, count_params(student), count_params(logit_net), profile.speed_gflops,
        logit_samples=0 if plain else cfg.strategy.proxy.size if proxy else n,
    )  # fmt: skip
    if t_train <= deadline_s:
        role = ROLE_ON_TIME
    elif t_logits <= deadline_s or state.stale_table is None:
        role = ROLE_FRESH
    else:
        role = ROLE_STALE

    metrics: dict[str, float] = {
        # a weights-only (FedAvg-like) client has no logits to fall back on: its late work is
        # the training it could not finish, so its compute time says it is late
        COMPUTE_KEY: t_train if role == ROLE_ON_TIME or plain else t_logits,
        "samples_new": float(len(data.label)),
        EPISODES_KEY: float(local.episodes),
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
        metrics[TRAIN_LOSS_KEY] = float(np.mean(losses[-max(1, len(losses) // 4) :]))
        metrics[TRAIN_STEPS_KEY] = float(meta.tasks * (meta.inner_steps + 1))  # gradient steps
        model = flatten_params(student)
    elif role == ROLE_ON_TIME:
        steps = local_steps(cfg, n)
        losses = fit_targets(
            student, state, cfg, steps, round_seed(cfg.seed, pid, server_round, 3),
            knowledge, delta, temperature,
        )  # fmt: skip
        tail = losses[-max(1, steps // local.epochs) :]
        metrics[TRAIN_LOSS_KEY] = float(np.mean(tail))
        metrics[TRAIN_STEPS_KEY] = float(steps)
        model = flatten_params(student)
    with torch.inference_mode():
        pred = student(f, h).argmax(1)
        best = cost_targets(state.costs, local.targets)
        chosen = np.take_along_axis(best, pred.numpy()[:, None], 1)[:, 0]
        metrics[TRAIN_ACCURACY_KEY] = float(np.mean(chosen >= best.max(1) - 1e-6))

    if plain:
        return RoundResult(role, n, None, server_round, model, metrics)
    if role == ROLE_STALE:
        table, n_up, logits_round = state.stale_table, state.stale_n, state.stale_round
    else:
        frozen = logit_net is teacher
        table = local_knowledge(cfg, logit_net, state, knowledge, frozen=frozen)
        n_up, logits_round = n, server_round
    if role != ROLE_STALE:
        state.stale_table, state.stale_n, state.stale_round = table, n, server_round
    return RoundResult(role, int(n_up), np.asarray(table, np.float64), logits_round, model, metrics)


def distill_global(
    cfg: FederatedRunConfig, weights: np.ndarray, knowledge: np.ndarray, aggregated_round: int
) -> np.ndarray:
    """KECO's steps 5–6: the averaged model distilled towards the global soft labels on the
    proxy set (``strategy.global_kd_steps`` minibatches of the T-softened KL).

    The one code path for this step: a client runs it right after decrypting the global of
    ``aggregated_round`` (CKKS), or the server right after aggregating it (``he=off`` with
    ``strategy.server_distill``). It is seeded by that round alone, so every party that runs it
    gets the same model.
    """
    st = cfg.strategy
    net = build_student(cfg, weights)
    f, h = proxy_tensors(cfg)
    g = torch.from_numpy(np.asarray(knowledge, dtype=np.float32))
    seed = round_seed(cfg.seed, 0, aggregated_round, 7)
    augment = np.random.default_rng(seed)

    def loss_fn(model: nn.Module, idx: torch.Tensor, step: int) -> torch.Tensor:
        fb, hb, gb = f[idx], h[idx], g[idx]
        if st.local.targets.permute_edges:
            fb, hb, gb, _ = permute_edges_batch(fb, hb, gb, torch.zeros_like(idx), augment)
        return soft_kl(model(fb, hb), gb, st.temperature)

    fit(net, len(g), loss_fn, st.global_kd_steps, st.local.batch_size, st.local.lr, seed)
    return flatten_params(net)


def client_student(
    cfg: FederatedRunConfig,
    profile: ClientProfile,
    weights: np.ndarray,
    server_round: int,
    state: LocalState | None = None,
) -> nn.Module:
    """The network a client decides with: the global student, except under ``fedmeta2ag``,
    where the client first fine-tunes the global meta-model on its buffer (``state``): MAML's
    meta-test, the personalisation the method is built for."""
    net = build_student(cfg, weights)
    meta = cfg.strategy.meta
    if cfg.strategy.name == "fedmeta2ag" and state is not None and len(state.label):
        if meta.adapt_steps > 0:
            from common.fed.maml import adapt

            feat_scale, hist_scale = feature_scale(cfg.scenario)
            net = adapt(
                net, torch.from_numpy(state.features / feat_scale).float(),
                torch.from_numpy(state.history / hist_scale).float(),
                torch.from_numpy(state.label).long(), steps=meta.adapt_steps, lr=meta.adapt_lr,
                batch_size=cfg.strategy.local.batch_size,
                seed=round_seed(cfg.seed, profile.partition_id, server_round, 5),
            )  # fmt: skip
    return net


def evaluate_student(
    cfg: FederatedRunConfig,
    profile: ClientProfile,
    weights: np.ndarray,
    server_round: int,
    state: LocalState | None = None,
) -> dict[str, float]:
    """The client's student (:func:`client_student`) on fresh episodes of its devices (§3)."""
    net = client_student(cfg, profile, weights, server_round, state)
    policy = NetPolicy(net, *feature_scale(cfg.scenario))
    seed = round_seed(cfg.seed, profile.partition_id, server_round, 4)
    return evaluate_policy(
        cfg.scenario, policy, cfg.strategy.local.eval_episodes, seed,
        batch=cfg.strategy.local.eval_episodes, profile=profile.devices,
    )  # fmt: skip

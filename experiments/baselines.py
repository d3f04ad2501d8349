"""Train the methods a study compares, each into policies the simulator can run (DESIGN §7).

- federated (``keco`` and its ablations, ``fedavg``, ``feddistill``, ``fedmeta2ag``): the real
  Flower simulation on Ray, through ``experiments.tasks.federation``; the key owner then reads
  the final global student (``feddistill``: every client's own student);
- ``centralized``: the student trained on the pooled data of every client's share of the
  federation's data schedule, with as many optimiser steps as all clients together (no
  privacy: the upper bound of the federated students);
- ``cnn``: KECO's CNN trained by each of ``cnn_clients`` clients on its own share of the
  schedule only (no federation, no distillation); its metrics are the mean over those models;
- ``d3qn`` / ``d3qn_student``: KD-D3QN's LSTM + dueling teacher (warm started on the first
  half of the schedule's rounds, then double DQN with heuristic-guided exploration on the
  worlds and for the optimiser steps left of the budget) and the student distilled from it;
- ``ddpg``: DDPG-based offloading (``common.training.ddpg``) on the schedule's worlds with
  the whole budget of episodes and optimiser steps;
- heuristics and the oracle (``common.mec.policies``).

The budget is the federation's (:func:`common.fed.local.schedule_budget`: every client on time,
every round): every trained method's ``info`` records the ``episodes`` it simulated and the
``steps`` it took, and the reports state them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from common.config import compose
from common.crypto.params import load_he
from common.fed import (
    ClientProfile,
    LocalState,
    build_student,
    client_student,
    federation_profile,
    initial_weights,
    load_teacher,
    train_on_schedule,
)
from common.fed.local import schedule_budget, schedule_devices
from common.fed.prepare import TEACHER_FILE, needs_teacher, prepare_run_dir
from common.fed.settings import FederatedRunConfig, federated_from_dict, register_schemas
from common.mec import collect_dataset, feature_scale
from common.mec.policies import HEURISTIC_METHODS, make_policy
from common.models import NetPolicy, build_for_scenario, count_params
from common.models.nets import ModelConfig, load_model
from common.training import (
    distill_student,
    normalize,
    seed_everything,
    teacher_outputs,
    train_d3qn,
)
from common.training.d3qn import d3qn_from_dict
from common.training.ddpg import ddpg_from_dict
from common.training.distill_offline import distill_from_dict
from experiments.tasks.study_settings import FEDERATED_METHODS

log = logging.getLogger("keco")

Policy = Callable[..., np.ndarray]


@dataclass
class Trained:
    """A trained method: its policies (several = one per client, metrics averaged)."""

    name: str
    policies: list[Policy]
    history: list[dict[str, Any]] = field(default_factory=list)
    """Per-round rows of a federated method (``server.json``)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Training seconds, parameters, run directory, budget (episodes, optimiser steps)."""
    client_policy: Callable[[ClientProfile], Policy] | None = None
    """The policy a given client decides with (a federation's personalised or own model);
    ``None``: every client uses ``policies[0]``."""
    config: FederatedRunConfig | None = None
    """A federation's own run config (its world: e.g. FedMeta2Ag's KKT edge allocation)."""

    def for_client(self, profile: ClientProfile) -> Policy:
        """What client ``profile`` runs."""
        return self.policies[0] if self.client_policy is None else self.client_policy(profile)


@dataclass
class StudyContext:
    """What every trainer of one study job needs."""

    cfg: DictConfig
    """The job's composed config (smoke settings applied)."""
    fed: FederatedRunConfig
    """The study's federation and scenario as typed config (base world of the job)."""
    run_dir: Path
    overrides: Sequence[str] = ()
    """The job's Hydra overrides: federated methods re-compose the config with their own."""
    apply_smoke: Callable[[DictConfig], DictConfig] = lambda c: c
    extra: Sequence[str] = ()
    """Overrides of the current sweep point or facet (``key=value``)."""

    @property
    def baselines(self) -> dict[str, Any]:
        raw = OmegaConf.to_container(self.cfg.experiment, resolve=True).get("baselines") or {}
        return dict(raw)  # type: ignore[arg-type]

    def scales(self) -> tuple[np.ndarray, np.ndarray]:
        return feature_scale(self.fed.scenario)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*groups: Sequence[str]) -> list[str]:
    """Later overrides of the same key replace earlier ones (Hydra rejects duplicates)."""
    merged: dict[str, str] = {}
    for group in groups:
        for item in group:
            merged.pop(override_key(item), None)
            merged[override_key(item)] = item
    return list(merged.values())


def method_config(ctx: StudyContext, method: str | None, run_dir: Path) -> FederatedRunConfig:
    """The typed config of federated ``method``: the job's config re-composed with the
    method's overrides (e.g. ``strategy=fedavg he=off``) and the sweep point's (``None``: the
    sweep point's config alone)."""
    own = FEDERATED_METHODS[method] if method is not None else ()
    overrides = merge_overrides(ctx.overrides, own, ctx.extra)
    register_schemas()
    raw = ctx.apply_smoke(compose(overrides))
    return federated_from_dict(raw, run_dir)


def _teacher_key(cfg: FederatedRunConfig) -> str:
    blob = json.dumps(
        [asdict(cfg.teacher), asdict(cfg.teacher_training), asdict(cfg.scenario), cfg.seed],
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _share_teacher(cfg: FederatedRunConfig, cache: Path) -> None:
    """Reuse the public teacher of an earlier run of this job with the same teacher, scenario
    and seed (it is trained on public proxy episodes only, so runs may share it)."""
    target = Path(cfg.client_dir) / TEACHER_FILE
    cached = cache / f"teacher-{_teacher_key(cfg)}.pt"
    if cached.exists() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cached, target)


def teacher_note(cfg: FederatedRunConfig) -> str:
    """What the public teacher cost (trained on public proxy episodes), for the budget table."""
    t = cfg.teacher_training
    episodes = t.episodes * (t.dagger_rounds + 1)
    steps = t.steps + t.dagger_rounds * max(1, t.steps // 2)
    return f"+ the public teacher: {episodes} public episodes, {steps:,} steps"


def _prepare(ctx: StudyContext, cfg: FederatedRunConfig) -> None:
    """Keys and the public teacher (:func:`prepare_run_dir`); the teacher is trained once per job
    and shared by every run with the same teacher, scenario and seed."""
    cache = ctx.run_dir / "runs"
    _share_teacher(cfg, cache)
    prepare_run_dir(cfg)
    if (Path(cfg.client_dir) / TEACHER_FILE).exists():
        cached = cache / f"teacher-{_teacher_key(cfg)}.pt"
        if not cached.exists():
            shutil.copy(Path(cfg.client_dir) / TEACHER_FILE, cached)


def train_federated(ctx: StudyContext, method: str, tag: str = "") -> Trained:
    """Run federated ``method`` on Ray and return its final student(s)."""
    from experiments.tasks.federation import client_models, final_student, simulate

    run_dir = ctx.run_dir / "runs" / f"{method}{tag}"
    cfg = method_config(ctx, method, run_dir)
    start = time.perf_counter()
    _prepare(ctx, cfg)
    history = simulate(cfg)
    scales = feature_scale(cfg.scenario)
    last_round = cfg.federation.rounds
    if cfg.strategy.name == "feddistill":  # every client keeps its own student
        own = client_models(cfg)
        policies: list[Policy] = [
            NetPolicy(build_student(cfg, w), *scales, method) for w in own.values()
        ]

        def client_policy(profile: ClientProfile) -> Policy:
            w = own.get(profile.partition_id, initial_weights(cfg))
            return NetPolicy(build_student(cfg, w), *scales, method)

    else:
        weights = final_student(cfg)
        policies = [NetPolicy(build_student(cfg, weights), *scales, method)]

        def client_policy(profile: ClientProfile) -> Policy:
            state = _client_state(cfg, profile.partition_id)
            net = client_student(cfg, profile, weights, last_round, state)
            return NetPolicy(net, *scales, method)

    info = {
        "train_seconds": round(time.perf_counter() - start, 2),
        "params": count_params(build_student(cfg)),
        "episodes": int(sum(r.get("episodes", 0) for r in history)),
        "steps": int(sum(r.get("train_steps", 0) for r in history)),
        "run_dir": str(run_dir),
        "bytes_up_total": int(sum(r.get("bytes_up", 0) for r in history)),
    }
    if needs_teacher(cfg):
        info["note"] = teacher_note(cfg)
    personal = cfg.strategy.name in ("feddistill", "fedmeta2ag")
    return Trained(method, policies, history, info, client_policy if personal else None, cfg)


def _client_state(cfg: FederatedRunConfig, partition_id: int) -> LocalState | None:
    """A client's newest saved state (its buffer), if it ever trained."""
    paths = sorted(
        cfg.states_dir.glob(f"client-{partition_id}-r*.npz"),
        key=lambda p: int(p.stem.rpartition("-r")[2]),
    )
    return LocalState.load(paths[-1], cfg.scenario) if paths else None


def _profiles(ctx: StudyContext, count: int | None = None) -> list[ClientProfile]:
    """The first ``count`` clients' profiles (default: every client of the federation)."""
    fed = ctx.fed
    count = fed.federation.num_clients if count is None else count
    return [federation_profile(fed, pid) for pid in range(count)]


def budget(ctx: StudyContext) -> dict[str, int]:
    """The federation's budget: episodes simulated and optimiser steps of all its clients."""
    return schedule_budget(ctx.fed, _profiles(ctx))


def _model(name: str) -> ModelConfig:
    return load_model(name)


def _info(start: float, net: torch.nn.Module, used: dict[str, int]) -> dict[str, Any]:
    return {
        "train_seconds": round(time.perf_counter() - start, 2), "params": count_params(net),
        "episodes": int(used["episodes"]), "steps": int(used["steps"]),
    }  # fmt: skip


def train_centralized(ctx: StudyContext) -> Trained:
    """The upper bound: the student on every client's data, pooled, with the federation's
    steps and, when KECO's clients distil from the public teacher, the same soft labels."""
    fed = ctx.fed.at(ctx.run_dir / "runs" / "centralized")
    start = time.perf_counter()
    teacher = None
    if needs_teacher(fed):
        _prepare(ctx, dataclasses.replace(fed, he=load_he("off")))  # the teacher, no keys
        teacher = load_teacher(Path(fed.client_dir) / TEACHER_FILE, fed.teacher, fed.scenario)
    seed_everything(fed.seed)
    net = build_for_scenario(fed.student, fed.scenario)
    used = train_on_schedule(fed, net, _profiles(ctx), teacher)
    info = _info(start, net, used)
    if teacher is not None:
        info["note"] = f"its soft labels as KECO's clients get them {teacher_note(fed)}"
    return Trained("centralized", [NetPolicy(net, *ctx.scales(), "centralized")], info=info)


def train_cnn(ctx: StudyContext) -> Trained:
    fed = ctx.fed
    start = time.perf_counter()
    clients = int(ctx.baselines.get("cnn_clients", 3))
    ratio = float(ctx.baselines.get("cnn_ratio", 1.0))  # < 1: narrower (2-core budget)
    policies: list[Policy] = []
    used = {"episodes": 0, "steps": 0}
    for profile in _profiles(ctx, clients):
        seed_everything(fed.seed + profile.partition_id)
        net = build_for_scenario(_model("cnn").scaled(ratio), fed.scenario)
        for key, value in train_on_schedule(fed, net, [profile]).items():
            used[key] += value
        policies.append(NetPolicy(net, *ctx.scales(), f"cnn-{profile.partition_id}"))
    info = _info(start, net, {k: v // clients for k, v in used.items()})
    info["note"] = "per client: its own share of the schedule, without federation"
    return Trained("cnn", policies, info=info)


def train_d3qn_pair(ctx: StudyContext) -> tuple[Trained, Trained]:
    """KD-D3QN: the LSTM + dueling teacher (warm start on the first half of the schedule, then
    D3QN on the rest of the budget) and the student distilled from it."""
    fed, b = ctx.fed, ctx.baselines
    start = time.perf_counter()
    seed_everything(fed.seed)
    teacher = build_for_scenario(_model(str(b.get("d3qn_model", "lstm_dueling"))), fed.scenario)
    total, profiles = budget(ctx), _profiles(ctx)
    half = dataclasses.replace(
        fed,
        federation=dataclasses.replace(fed.federation, rounds=max(1, fed.federation.rounds // 2)),
    )
    used = train_on_schedule(half, teacher, profiles)
    worlds = schedule_devices(fed, profiles)[used["episodes"] :]
    if worlds:  # the rest of the budget: D3QN on the later rounds' worlds
        steps = max(0, total["steps"] - used["steps"])
        cfg = dataclasses.replace(
            d3qn_from_dict(b.get("d3qn") or {}, "experiment.baselines.d3qn"),
            episodes=len(worlds), parallel_episodes=1,
            updates_per_episode=-(-steps // len(worlds)),
        )  # fmt: skip
        train_d3qn(teacher, fed.scenario, cfg, fed.seed + 19, profiles=worlds)
        used = {"episodes": used["episodes"] + len(worlds),
                "steps": used["steps"] + cfg.updates_per_episode * len(worlds)}  # fmt: skip
    teacher_info = _info(start, teacher, used)
    t_student = time.perf_counter()
    distill = distill_from_dict(b.get("distill") or {}, "experiment.baselines.distill")
    scales = ctx.scales()
    episodes = int(b.get("distill_episodes", 10))
    data = normalize(
        collect_dataset(fed.scenario, NetPolicy(teacher, *scales), episodes, fed.seed + 23),
        fed.scenario,
    )
    seed_everything(fed.seed + 1)
    student = build_for_scenario(fed.student, fed.scenario)
    distill_student(student, data, teacher_outputs(teacher, data), distill, fed.seed + 29)
    student_info = _info(t_student, student, {"episodes": episodes, "steps": distill.steps})
    student_info["note"] = "distillation only; its teacher's budget comes on top"
    return (
        Trained("d3qn", [NetPolicy(teacher, *scales, "d3qn")], info=teacher_info),
        Trained("d3qn_student", [NetPolicy(student, *scales, "d3qn_student")], info=student_info),
    )


def train_ddpg_method(ctx: StudyContext) -> Trained:
    """DDPG from scratch on the schedule's worlds, with the federation's episodes and steps."""
    from common.training.ddpg import train_ddpg

    fed = ctx.fed
    start = time.perf_counter()
    total = budget(ctx)
    worlds = schedule_devices(fed, _profiles(ctx))
    cfg = dataclasses.replace(
        ddpg_from_dict(ctx.baselines.get("ddpg") or {}, "experiment.baselines.ddpg"),
        episodes=len(worlds), parallel_episodes=1,
        updates_per_episode=-(-total["steps"] // len(worlds)),
    )  # fmt: skip
    result = train_ddpg(fed.scenario, cfg, fed.seed + 31, profiles=worlds)
    used = {"episodes": len(worlds), "steps": cfg.updates_per_episode * len(worlds)}
    info = _info(start, result.actor, used)
    return Trained("ddpg", [NetPolicy(result.actor, *ctx.scales(), "ddpg")], info=info)


def train_methods(ctx: StudyContext, methods: Sequence[str], tag: str = "") -> dict[str, Trained]:
    """Train ``methods`` (in order; ``d3qn`` and ``d3qn_student`` share one training)."""
    out: dict[str, Trained] = {}
    for method in methods:
        if method in out:
            continue
        log.info("study: training %s%s", method, tag)
        torch.set_num_threads(int(ctx.cfg.get("threads", 1)))
        if method in HEURISTIC_METHODS:
            out[method] = Trained(method, [make_policy(method)])
        elif method in FEDERATED_METHODS:
            out[method] = train_federated(ctx, method, tag)
        elif method == "centralized":
            out[method] = train_centralized(ctx)
        elif method == "cnn":
            out[method] = train_cnn(ctx)
        elif method in ("d3qn", "d3qn_student"):
            teacher, student = train_d3qn_pair(ctx)
            out.update({k: v for k, v in (("d3qn", teacher), ("d3qn_student", student))
                        if k in methods})  # fmt: skip
        elif method == "ddpg":
            out[method] = train_ddpg_method(ctx)
        else:  # StudyConfig.validate lists the valid names before any work starts
            raise AssertionError(method)
    return out

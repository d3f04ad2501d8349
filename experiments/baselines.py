"""Train the methods a study compares, each into policies the simulator can run (DESIGN §7).

- federated (``keco`` and its ablations, ``fedavg``, ``feddistill``, ``fedmeta2ag``): the real
  Flower simulation on Ray, through ``experiments.tasks.federation``; the key owner then reads
  the final global student (``feddistill``: every client's own student);
- ``centralized``: the student by imitation of the oracle on the pooled data of all clients'
  devices (the same episode budget as the federation; no privacy, an upper bound);
- ``cnn``: KECO's CNN trained by each of ``cnn_clients`` clients on its own data only (no
  federation, no distillation); its metrics are the mean over those clients' models;
- ``d3qn`` / ``d3qn_student``: KD-D3QN's LSTM + dueling teacher (imitation warm start, then
  double DQN with heuristic-guided exploration) and the student distilled from it;
- ``ddpg``: DDPG-based offloading (``common.training.ddpg``);
- heuristics and the oracle (``common.mec.policies``).
"""

from __future__ import annotations

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
import yaml
from omegaconf import DictConfig, OmegaConf

from common.config import (
    CONF_DIR,
    FEDERATED_METHODS,
    HEURISTIC_METHODS,
    FederatedRunConfig,
    compose,
    d3qn_from_dict,
    ddpg_from_dict,
    distill_from_dict,
    federated_from_dict,
    imitation_from_dict,
    model_from_dict,
)
from common.fed import build_student, client_profile
from common.fed.prepare import TEACHER_FILE, prepare_run_dir
from common.mec import collect_dataset, feature_scale
from common.mec.policies import make_policy
from common.models import NetPolicy, build_for_scenario, count_params
from common.training import (
    distill_student,
    normalize,
    seed_everything,
    teacher_outputs,
    train_d3qn,
    train_imitation,
)

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
    """Training seconds, parameters, run directory."""


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


def method_config(ctx: StudyContext, method: str, run_dir: Path) -> FederatedRunConfig:
    """The typed config of federated ``method``: the job's config re-composed with the
    method's overrides (e.g. ``strategy=fedavg he=off``) and the sweep point's."""
    overrides = merge_overrides(ctx.overrides, FEDERATED_METHODS[method], ctx.extra)
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
    target = Path(cfg.run_dir) / TEACHER_FILE
    cached = cache / f"teacher-{_teacher_key(cfg)}.pt"
    if cached.exists() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cached, target)


def train_federated(ctx: StudyContext, method: str, tag: str = "") -> Trained:
    """Run federated ``method`` on Ray and return its final student(s)."""
    from experiments.tasks.federation import final_student, simulate

    run_dir = ctx.run_dir / "runs" / f"{method}{tag}"
    cfg = method_config(ctx, method, run_dir)
    start = time.perf_counter()
    cache = ctx.run_dir / "runs"
    _share_teacher(cfg, cache)
    prepare_run_dir(cfg)
    if (Path(cfg.run_dir) / TEACHER_FILE).exists():
        cached = cache / f"teacher-{_teacher_key(cfg)}.pt"
        if not cached.exists():
            shutil.copy(Path(cfg.run_dir) / TEACHER_FILE, cached)
    history = simulate(cfg)
    weights = final_student(cfg)
    weights = weights if isinstance(weights, list) else [weights]
    scales = feature_scale(cfg.scenario)
    policies: list[Policy] = [NetPolicy(build_student(cfg, w), *scales, method) for w in weights]
    info = {
        "train_seconds": round(time.perf_counter() - start, 2),
        "params": count_params(build_student(cfg)),
        "run_dir": str(run_dir),
        "bytes_up_total": int(sum(r.get("bytes_up", 0) for r in history)),
    }
    return Trained(method, policies, history, info)


def _profiles(ctx: StudyContext, count: int) -> list:
    fed = ctx.fed
    return [
        client_profile(
            fed.scenario, pid, fed.federation.heterogeneity, fed.strategy.local.speed_gflops,
            fed.seed,
        ).devices
        for pid in range(count)
    ]  # fmt: skip


def _imitation_budget(ctx: StudyContext, clients: int) -> Any:
    """Imitation config of the centralised/per-client baselines: by default each client's
    episodes are what it simulates over the whole federation (rounds × local episodes)."""
    fed = ctx.fed
    episodes = fed.federation.rounds * fed.strategy.local.episodes
    raw = {"episodes": episodes, **dict(ctx.baselines.get("imitation") or {})}
    return imitation_from_dict(raw, "experiment.baselines.imitation")


def _model(name: str):
    return model_from_dict(yaml.safe_load((CONF_DIR / "model" / f"{name}.yaml").read_text()))


def train_centralized(ctx: StudyContext) -> Trained:
    fed = ctx.fed
    start = time.perf_counter()
    seed_everything(fed.seed)
    net = build_for_scenario(fed.student, fed.scenario)
    clients = fed.federation.num_clients
    train_imitation(
        net, fed.scenario, _imitation_budget(ctx, clients), fed.seed + 11,
        profiles=_profiles(ctx, clients),
    )  # fmt: skip
    info = {"train_seconds": round(time.perf_counter() - start, 2), "params": count_params(net)}
    return Trained("centralized", [NetPolicy(net, *ctx.scales(), "centralized")], info=info)


def train_cnn(ctx: StudyContext) -> Trained:
    fed = ctx.fed
    start = time.perf_counter()
    clients = int(ctx.baselines.get("cnn_clients", 3))
    policies: list[Policy] = []
    params = 0
    for pid, profile in enumerate(_profiles(ctx, clients)):
        seed_everything(fed.seed + pid)
        ratio = float(ctx.baselines.get("cnn_ratio", 1.0))  # < 1: narrower (2-core budget)
        net = build_for_scenario(_model("cnn").scaled(ratio), fed.scenario)
        train_imitation(
            net, fed.scenario, _imitation_budget(ctx, 1), fed.seed + 13 + pid,
            profiles=[profile],
        )  # fmt: skip
        policies.append(NetPolicy(net, *ctx.scales(), f"cnn-{pid}"))
        params = count_params(net)
    info = {"train_seconds": round(time.perf_counter() - start, 2), "params": params}
    return Trained("cnn", policies, info=info)


def train_d3qn_pair(ctx: StudyContext) -> tuple[Trained, Trained]:
    """KD-D3QN: the LSTM + dueling teacher (imitation warm start, then D3QN) and its student."""
    fed, b = ctx.fed, ctx.baselines
    start = time.perf_counter()
    seed_everything(fed.seed)
    teacher = build_for_scenario(_model(str(b.get("d3qn_model", "lstm_dueling"))), fed.scenario)
    warm = imitation_from_dict(b.get("imitation") or {}, "experiment.baselines.imitation")
    train_imitation(teacher, fed.scenario, warm, fed.seed + 17)
    train_d3qn(teacher, fed.scenario, d3qn_from_dict(b.get("d3qn") or {}), fed.seed + 19)
    t_teacher = time.perf_counter() - start
    distill = distill_from_dict(b.get("distill") or {}, "experiment.baselines.distill")
    scales = ctx.scales()
    data = normalize(
        collect_dataset(
            fed.scenario,
            NetPolicy(teacher, *scales),
            int(b.get("distill_episodes", 10)),
            fed.seed + 23,
        ),
        fed.scenario,
    )
    seed_everything(fed.seed + 1)
    student = build_for_scenario(fed.student, fed.scenario)
    distill_student(student, data, teacher_outputs(teacher, data), distill, fed.seed + 29)
    t_student = time.perf_counter() - start - t_teacher
    return (
        Trained("d3qn", [NetPolicy(teacher, *scales, "d3qn")],
                info={"train_seconds": round(t_teacher, 2), "params": count_params(teacher)}),
        Trained("d3qn_student", [NetPolicy(student, *scales, "d3qn_student")],
                info={"train_seconds": round(t_student, 2), "params": count_params(student)}),
    )  # fmt: skip


def train_ddpg_method(ctx: StudyContext) -> Trained:
    from common.training.ddpg import train_ddpg

    fed = ctx.fed
    start = time.perf_counter()
    cfg = ddpg_from_dict(ctx.baselines.get("ddpg") or {}, "experiment.baselines.ddpg")
    result = train_ddpg(fed.scenario, cfg, fed.seed + 31)
    info = {
        "train_seconds": round(time.perf_counter() - start, 2),
        "params": count_params(result.actor),
    }
    return Trained("ddpg", [NetPolicy(result.actor, *ctx.scales(), "ddpg")], info=info)


def train_methods(ctx: StudyContext, methods: Sequence[str], tag: str = "") -> dict[str, Trained]:
    """Train ``methods`` (in order; ``d3qn`` and ``d3qn_student`` share one training)."""
    out: dict[str, Trained] = {}
    for method in methods:
        if method in out:
            continue
        log.info("study: training %s%s", method, tag)
        torch.set_num_threads(int(ctx.cfg.get("threads", 2)))
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

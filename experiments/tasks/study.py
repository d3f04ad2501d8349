"""``task: study``: one paper experiment (``conf/experiment/<study>.yaml``) for one seed.

1. Validate everything first: the study, the federation config, and the scenario of every
   (x, facet) point, so a bad value fails before any training.
2. Train every method (``experiments.baselines``): once on the base world, once per facet
   (``train_per_facet``), or, for ``sweep.target=federation``, once per sweep point.
3. Evaluate: ``scenario`` sweeps run every trained policy on the same held-out episodes of
   every (x, facet) world; ``timeline`` sweeps record throughput per time bucket;
   ``federation`` sweeps record the last round's federated evaluation (each client's model
   on its own devices: the quality non-IID clients see).
4. Write ``results.json``: ``{"study", "seed", "config", "records": [tidy rows], "methods":
   {name: training info}, "rounds": [per-round rows of the federations, with "method"],
   "policies": {name: metrics in its training world + training info}}``; ``python -m
   experiments.report dir=<sweep dir>`` aggregates the seeds of a ``-m`` sweep.

``debug=smoke`` is the one way to shrink a study: ``conf/debug/smoke.yaml`` shrinks every
experiment and sets ``smoke: true``, and with it the study's ``experiment.smoke`` block (dotted
key → value: what ``debug=smoke`` also changes in this study) is applied on top. The block does
nothing without ``debug=smoke``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from common.config import ConfigError
from common.fed import federation_profile
from common.fed.settings import FederatedRunConfig, federated_from_dict
from common.mec import rollout
from common.mec.scenario import ScenarioConfig, scenario_from_dict
from common.progress import progress
from common.training import evaluate_episodes
from experiments.baselines import StudyContext, Trained, method_config, train_methods
from experiments.logs import setup_logging
from experiments.tasks.study_settings import StudyConfig, study_from_dict

log = logging.getLogger("keco")


def apply_smoke(cfg: DictConfig) -> DictConfig:
    """Under ``debug=smoke`` (its ``smoke: true``), write ``experiment.smoke``'s values into cfg."""
    if not cfg.get("smoke", False):
        return cfg
    for key, value in (OmegaConf.to_container(cfg.experiment.get("smoke") or {}) or {}).items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    node = raw
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def world(cfg: DictConfig, overrides: dict[str, Any]) -> ScenarioConfig:
    """The scenario of ``cfg`` with dotted ``scenario.*`` overrides, validated."""
    raw = {"scenario": OmegaConf.to_container(cfg.scenario, resolve=True)}
    for key, value in overrides.items():
        if not key.startswith("scenario."):
            raise ConfigError(f"{key}: only scenario.* keys can vary at evaluation time")
        _set(raw, key, value)
    return scenario_from_dict(raw["scenario"])


def _x_value(study: StudyConfig, value: Any, scenario: ScenarioConfig | None) -> Any:
    if study.sweep.x_is_volume and scenario is not None:
        return int(round(scenario.effective_arrival_prob * scenario.n_devices * scenario.n_slots))
    return value


def _facets(study: StudyConfig) -> list[tuple[str | None, dict[str, Any]]]:
    return list(study.facets.items()) if study.facets else [(None, {})]


def _point(study: StudyConfig, facet: str | None, **values: Any) -> dict[str, Any]:
    """The columns that place a record: the facet (if the study has one) and ``values``."""
    point: dict[str, Any] = {study.facet: facet} if study.facet is not None else {}
    return {**point, **values}


def _row(study: StudyConfig, method: str, facet: str | None, **values: Any) -> dict[str, Any]:
    return {"method": method, **_point(study, facet, **values)}


EPISODE_METRICS = (
    "qoe", "qoe_episode", "delay", "drop_ratio", "completion_rate", "energy_local", "energy_tx",
    "energy_idle", "energy_edge", "energy_total", "offload_failures", "offload_ratio",
    "throughput",
)  # fmt: skip
"""Metrics a record also keeps per held-out episode (for the report's confidence intervals)."""


def evaluate(trained: Trained, scenario: ScenarioConfig, episodes: int, seed: int) -> dict:
    """§3 metrics of a method (the mean over its policies) plus the completion rate, and
    ``episodes``: the same metrics per held-out episode (episode ``i`` is the same task draw
    for every method evaluated with ``seed``)."""
    runs = [evaluate_episodes(scenario, p, episodes, seed) for p in trained.policies]
    overall = {k: float(np.mean([r[0][k] for r in runs])) for k in runs[0][0] if k != "slots_per_s"}
    overall["completion_rate"] = 1.0 - overall["drop_ratio"]
    per = {k: np.mean([r[1][k] for r in runs], axis=0) for k in runs[0][1]}
    per["completion_rate"] = 1.0 - per["drop_ratio"]
    overall["episodes"] = {k: [float(v) for v in per[k]] for k in EPISODE_METRICS}
    return overall


def eval_clients(num_clients: int, count: int) -> list[int]:
    """The partitions a federation sweep evaluates: ``count`` spread evenly over the ids."""
    return sorted({int(round(i)) for i in np.linspace(0, num_clients - 1, min(count, num_clients))})


def evaluate_clients(
    trained: Trained, fed: FederatedRunConfig, clients: list[int], episodes: int, seed: int
) -> dict[str, Any]:
    """A method on held-out episodes of the devices of ``clients`` (each with the model it
    decides with, e.g. a personalised one), as :func:`evaluate` records it; client ``c``'s
    episodes are seeded ``seed + c`` for every method, so methods are paired."""
    per: dict[str, list[float]] = {k: [] for k in EPISODE_METRICS}
    for pid in clients:
        profile = federation_profile(fed, pid)
        _, values = evaluate_episodes(
            fed.scenario, trained.for_client(profile), episodes, seed + pid,
            profile=profile.devices,
        )  # fmt: skip
        values["completion_rate"] = 1.0 - values["drop_ratio"]
        for key in EPISODE_METRICS:
            per[key] += [float(v) for v in values[key]]
    metrics: dict[str, Any] = {k: float(np.mean(v)) for k, v in per.items()}
    metrics["episodes"] = per
    return metrics


def timeline(trained: Trained, scenario: ScenarioConfig, episodes: int, seed: int, bucket_s: float):
    """Completed tasks per second in consecutive ``bucket_s`` windows (mean over policies):
    ``(end of window in s, throughput, throughput per episode)``."""
    per_slot = []
    for policy in trained.policies:
        batches, _ = rollout(scenario, policy, episodes, seed)
        per_slot.append(np.concatenate([b.completions for b in batches]))  # [episodes, T]
    done = np.mean(per_slot, axis=0)
    slots = max(1, int(round(bucket_s / scenario.slot_s)))
    for start in range(0, done.shape[1], slots):
        chunk = done[:, start : start + slots]
        rate = chunk.sum(1) / (chunk.shape[1] * scenario.slot_s)
        yield (start + chunk.shape[1]) * scenario.slot_s, float(rate.mean()), rate.tolist()


def plan(
    cfg: DictConfig, study: StudyConfig
) -> list[tuple[str | None, Any, ScenarioConfig | None]]:
    """The (facet, x value, evaluation world) points of a study; a bad value fails here.
    Federation sweeps have no evaluation world (each point trains its own federations)."""
    sweep = study.sweep
    points: list[tuple[str | None, Any, ScenarioConfig | None]] = []
    for facet, facet_overrides in _facets(study):
        if sweep.target == "federation":
            points += [(facet, v, None) for v in sweep.values]
            continue
        for value in sweep.values if sweep.target == "scenario" else [None]:
            point = dict(facet_overrides)
            if sweep.key is not None and value is not None:
                point[sweep.key] = value
            points.append((facet, value, world(cfg, point)))
    return points


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    setup_logging()
    cfg = apply_smoke(cfg)
    study = study_from_dict(cfg.experiment)
    if overrides is None:
        overrides = _hydra_overrides()
    base = federated_from_dict(cfg, run_dir / "runs")  # fails here on a bad federation value
    sweep = study.sweep
    points = plan(cfg, study)  # every world is built (and validated) before any training

    ctx = StudyContext(cfg, base, run_dir, overrides, apply_smoke)
    records: list[dict[str, Any]] = []
    methods_info: dict[str, Any] = {}
    rounds: list[dict[str, Any]] = []
    policies: dict[str, dict[str, Any]] = {}
    n_ep, seed = study.eval_episodes, study.eval_seed

    def note(trained: dict[str, Trained], tag: str, point: dict[str, Any]) -> None:
        for name, t in trained.items():
            methods_info[f"{name}{tag}"] = t.info
            rows = ({**row, "method": name, "run": f"{name}{tag}", **point} for row in t.history)
            rounds.extend(rows)

    if sweep.target == "federation":
        for facet, value, _ in points:
            extra = [f"{sweep.key}={value}"]
            extra += [f"{k}={v}" for k, v in dict(_facets(study)).get(facet, {}).items()]
            tag = f"-{sweep.x}{value}" + (f"-{facet}" if facet else "")
            point_ctx = dataclasses.replace(ctx, extra=extra)
            trained = train_methods(point_ctx, study.methods, tag)
            note(trained, tag, _point(study, facet, **{sweep.x: value}))
            point = method_config(point_ctx, None, run_dir / "runs")
            clients = eval_clients(point.federation.num_clients, study.eval_clients)
            for name, t in trained.items():
                metrics = evaluate_clients(t, t.config or point, clients, n_ep, seed)
                records.append(_row(study, name, facet, **{sweep.x: value}, **metrics))
                metrics = {k: v for k, v in metrics.items() if k != "episodes"}
                policies[f"{name}{tag}"] = {**metrics, **t.info}
    else:
        per_facet = study.train_per_facet and study.facets
        trained_for: dict[str | None, dict[str, Trained]] = {}
        for facet, facet_overrides in _facets(study) if per_facet else [(None, {})]:
            extra = [f"{k}={v}" for k, v in facet_overrides.items()]
            tag = f"-{facet}" if facet else ""
            facet_cfg = copy.deepcopy(cfg)  # the facet's world for the non-federated methods
            for key, value in facet_overrides.items():
                OmegaConf.update(facet_cfg, key, value, merge=False)
            facet_ctx = dataclasses.replace(
                ctx, cfg=facet_cfg, fed=federated_from_dict(facet_cfg, run_dir / "runs"),
                extra=extra,
            )  # fmt: skip
            trained_for[facet] = train_methods(facet_ctx, study.methods, tag)
            note(trained_for[facet], tag, _point(study, facet))
            for name, t in trained_for[facet].items():  # each method in its training world
                metrics = evaluate(t, facet_ctx.fed.scenario, n_ep, seed)
                metrics.pop("episodes")
                policies[f"{name}{tag}"] = {**metrics, **t.info}
        for facet, value, scenario in progress(
            points, "study evaluation", unit="point", milestones=0
        ):
            trained = trained_for[facet if per_facet else None]
            for name in study.methods:
                if sweep.target == "timeline":
                    for t, thr, per in timeline(
                        trained[name], scenario, n_ep, seed, sweep.bucket_s
                    ):
                        records.append(
                            _row(study, name, facet, **{sweep.x: t}, throughput=thr,
                                 episodes={"throughput": per})
                        )  # fmt: skip
                else:
                    metrics = evaluate(trained[name], scenario, n_ep, seed)
                    x = _x_value(study, value, scenario)
                    records.append(_row(study, name, facet, **{sweep.x: x}, **metrics))
            log.info("study %s: evaluated facet=%s %s=%s", study.name, facet, sweep.x, value)

    results = {
        "study": study.name,
        "seed": int(cfg.get("seed", 0)),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "records": records,
        "methods": methods_info,
        "rounds": rounds,
        "policies": policies,
    }
    path = run_dir / "results.json"
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"results: {path}")
    return results


def _hydra_overrides() -> list[str]:
    """The job's command-line overrides (the federated methods re-compose with them)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise ConfigError("task=study re-composes the config: run it through experiments.run")
    return list(HydraConfig.get().overrides.task)

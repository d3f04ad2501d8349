"""Settings of a study (``conf/experiment/<study>.yaml``, ``task: study``) and its method
registry: the names a study may compare and the overrides that make each federated one."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.config import ConfigError, build, check_positive, check_positive_int, to_dict, typed
from common.mec.policies import HEURISTIC_METHODS

# --------------------------------------------------------------------------------------------
# Studies: the papers' experiments as sweeps (conf/experiment/<study>.yaml, task: study)
# --------------------------------------------------------------------------------------------
FEDERATED_METHODS: dict[str, tuple[str, ...]] = {
    "keco": (),
    "keco_plain": ("he=off",),
    "keco_no_delta": ("strategy=keco_no_delta",),
    "keco_fixed_delta": ("strategy=keco_fixed_delta",),
    "keco_student_logits": ("strategy=keco_student_logits",),
    "keco_class_table": ("strategy.knowledge=class_table",),
    "keco_global_kd": ("strategy.global_kd_steps=100",),
    "fedavg": ("strategy=fedavg", "he=off"),
    "fedavg_wait": ("strategy=fedavg", "he=off", "strategy.late=wait"),
    "fedavg_drop": ("strategy=fedavg", "he=off", "strategy.late=drop"),
    "feddistill": ("strategy=feddistill",),
    "fedmeta2ag": ("strategy=fedmeta2ag", "he=off", "scenario.edge_allocation=kkt"),
}
"""Federated methods and the Hydra overrides that turn the study's config into each one."""
TRAINED_METHODS = ("centralized", "cnn", "d3qn", "d3qn_student", "ddpg")
"""Methods trained without federation (see ``experiments.baselines``)."""
METHODS = (*FEDERATED_METHODS, *TRAINED_METHODS, *HEURISTIC_METHODS)
SWEEP_TARGETS = ("scenario", "federation", "timeline")


@dataclass(frozen=True)
class SweepConfig:
    """What a study varies (``experiment.sweep``)."""

    target: str = "scenario"
    """``scenario``: train every method once, evaluate it at every value of ``key`` (a
    ``scenario.*`` field); ``federation``: train the federated methods once per value of
    ``key`` (any config key, e.g. ``federation.num_clients``) and record their federated
    evaluation; ``timeline``: evaluate once per facet and record ``metric`` per time bucket."""
    key: str | None = None
    """Dotted config key the values are written to."""
    x: str = "x"
    """Name of the x column in the records (and the figure's x axis)."""
    values: tuple[Any, ...] = ()
    """Values of ``key``."""
    x_is_volume: bool = False
    """Record x as the expected tasks per episode (arrival probability × devices × slots)
    instead of the raw value: KECO's "data scale"."""
    bucket_s: float = 10.0
    """``timeline``: width of a time bucket, seconds."""

    def validate(self) -> SweepConfig:
        if self.target not in SWEEP_TARGETS:
            raise ConfigError(
                f"experiment.sweep.target must be one of {list(SWEEP_TARGETS)}, got {self.target!r}"
            )
        if self.target != "timeline":
            if not self.key or not self.values:
                raise ConfigError("experiment.sweep needs a key and a non-empty list of values")
            if self.target == "scenario" and not self.key.startswith("scenario."):
                raise ConfigError(
                    f"experiment.sweep.key must be a scenario.* field for target=scenario, "
                    f"got {self.key!r}"
                )
        check_positive(self.bucket_s, "experiment.sweep.bucket_s")
        return self


@dataclass(frozen=True)
class StudyConfig:
    """``task: study``: train methods, sweep a variable, record tidy rows (one per method × x
    × facet) into ``results.json`` for ``python -m experiments.report``."""

    name: str
    """The study (``conf/experiment/<name>.yaml``)."""
    methods: tuple[str, ...]
    """Methods compared (:data:`METHODS`)."""
    sweep: SweepConfig
    facet: str | None = None
    """Name of the facet column (e.g. ``pressure``); ``None``: no facets."""
    facets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Facet value → dotted overrides (``scenario.*`` for scenario/timeline sweeps)."""
    eval_episodes: int = 10
    """Evaluation episodes per (method, x, facet); the same seeds for every method."""
    eval_seed: int = 50000
    """Seed of the evaluation episodes (disjoint from training seeds)."""
    eval_clients: int = 10
    """``federation`` sweeps: the clients whose devices every method is evaluated on (spread
    evenly over the partition ids; each decides with the model it would use)."""
    train_per_facet: bool = False
    """Train the methods separately in every facet's world (e.g. under CPU or memory
    pressure) instead of once on the base scenario."""
    report: dict[str, Any] = field(default_factory=dict)
    """The plot spec of ``experiments.report`` (kept as given)."""

    def validate(self) -> StudyConfig:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"experiment.methods: unknown methods {unknown}; valid methods are {list(METHODS)}"
            )
        if self.sweep.target == "federation":
            allowed = (*FEDERATED_METHODS, *HEURISTIC_METHODS)
            bad = [m for m in self.methods if m not in allowed]
            if bad:
                raise ConfigError(
                    f"experiment.methods {bad} are not federated; a sweep over {self.sweep.key} "
                    f"trains federations (valid: {list(FEDERATED_METHODS)}, with the heuristics "
                    f"{list(HEURISTIC_METHODS)} as references)"
                )
        check_positive_int(self.eval_episodes, "experiment.eval_episodes")
        check_positive_int(self.eval_clients, "experiment.eval_clients")
        if (self.facet is None) != (not self.facets):
            raise ConfigError("experiment.facet and experiment.facets go together")
        for value, overrides in self.facets.items():
            if not isinstance(overrides, Mapping):
                raise ConfigError(f"experiment.facets.{value} must map config keys to values")
        return self


def study_from_dict(raw: Any) -> StudyConfig:
    """Build and validate a :class:`StudyConfig` from the ``experiment`` node."""
    d = to_dict(raw)
    hints = typing.get_type_hints(StudyConfig)
    sweep = build(SweepConfig, to_dict(d.get("sweep", {})), "experiment.sweep").validate()
    # the experiment node also holds the task's other settings: only the study's are read here
    picked = {
        k: typed(v, hints[k], f"experiment.{k}")
        for k, v in d.items()
        if k in hints and k != "sweep" and v is not None
    }
    picked["methods"] = picked.get("methods") or ()
    picked["facets"] = {str(k): to_dict(v) for k, v in (picked.get("facets") or {}).items()}
    if "name" not in picked:
        raise ConfigError("experiment.name is missing (the study's name)")
    return StudyConfig(sweep=sweep, **picked).validate()

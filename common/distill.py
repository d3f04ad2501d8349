"""Distillation losses and schedules: the oracle's targets, KECO's hard/soft loss, δ and T
schedules, soft-label tables, and KD-D3QN's offline Q-value matching.

KECO loss (DESIGN §4), for student logits ``z``, targets ``q`` (the oracle's cost-aware target
distribution, or its hard label) and soft-label logits ``g`` (a teacher's logits, or row
``G[y]`` of the global per-class table)::

    L = δ · CE(q, z) + (1 − δ) · T² · KL(softmax(g / T) ‖ softmax(z / T))

The T² keeps the soft term's gradient on the scale of the hard term's (Hinton et al.); the
soft term's weight ``(1 − δ)·T²`` is capped at a multiple of the hard term's (``soft_weight``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.config import (
    ConfigError,
    build,
    check_positive,
    check_positive_int,
    check_unit,
    to_dict,
)

SCHEDULE_KINDS = ("constant", "linear", "cosine", "step")


@dataclass(frozen=True)
class ScheduleConfig:
    """A scalar that moves from ``start`` to ``floor`` over ``length`` steps (KECO's δ)."""

    kind: str = "linear"
    """``constant`` (always start), ``linear``, ``cosine`` or ``step`` (start until ``length``,
    then floor)."""
    start: float = 0.75
    """Value at step 0 (KECO: hard:soft 3:1 early, so δ = 0.75)."""
    floor: float = 0.25
    """Value from step ``length`` on (KECO: 1:3 late, so δ = 0.25)."""
    length: int = 10
    """Steps (rounds or optimiser steps) to go from start to floor."""

    def validate(self, where: str = "schedule") -> ScheduleConfig:
        if self.kind not in SCHEDULE_KINDS:
            raise ConfigError(
                f"{where}.kind must be one of {list(SCHEDULE_KINDS)}, got {self.kind!r}"
            )
        check_unit(self.start, f"{where}.start")
        check_unit(self.floor, f"{where}.floor")
        check_positive_int(self.length, f"{where}.length")
        return self


TARGET_KINDS = ("soft", "hard")


@dataclass(frozen=True)
class TargetConfig:
    """How the oracle's per-action costs become a student's training targets."""

    kind: str = "soft"
    """``soft``: softmin over the oracle's predicted cost of every action,
    ``q_a ∝ exp(−(c_a − min c)/temperature)``, so equally good actions get equal mass and
    near-ties share it; ``hard``: one-hot of the oracle's argmin (ties go to the lowest index)."""
    temperature: float = 0.3
    """Softmin temperature in QoE units (a cost difference of ``temperature`` is a factor e;
    on ``seed001`` the median gap between the two best actions is about 0.1)."""
    permute_edges: bool = True
    """Relabel the edge nodes of every minibatch sample at random (features, history and
    targets alike), so that no EN index is favoured."""

    def validate(self, where: str = "targets") -> TargetConfig:
        if self.kind not in TARGET_KINDS:
            raise ConfigError(
                f"{where}.kind must be one of {list(TARGET_KINDS)}, got {self.kind!r}"
            )
        check_positive(self.temperature, f"{where}.temperature")
        if not isinstance(self.permute_edges, bool):
            raise ConfigError(
                f"{where}.permute_edges must be true or false, got {self.permute_edges!r}"
            )
        return self


def targets_from_dict(raw: Any, where: str = "targets") -> TargetConfig:
    """Build and validate a :class:`TargetConfig`."""
    return build(TargetConfig, to_dict(raw), where).validate(where)


def schedule_from_dict(raw: Any, where: str = "schedule") -> ScheduleConfig:
    """Build and validate a :class:`ScheduleConfig`."""
    return build(ScheduleConfig, to_dict(raw), where).validate(where)


def schedule_value(cfg: ScheduleConfig, step: int) -> float:
    """Value of the schedule at ``step`` (0-based): ``start`` at 0, ``floor`` from ``length`` on."""
    if cfg.kind == "constant":
        return cfg.start
    progress = min(max(step, 0) / cfg.length, 1.0)
    if cfg.kind == "linear":
        return cfg.start + (cfg.floor - cfg.start) * progress
    if cfg.kind == "cosine":
        return cfg.floor + (cfg.start - cfg.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.kind == "step":
        return cfg.start if step < cfg.length else cfg.floor
    raise ValueError(f"unknown schedule kind {cfg.kind!r}")


def cost_targets(costs: np.ndarray, cfg: TargetConfig) -> np.ndarray:
    """Target distributions [n, M + 1] from the oracle's predicted costs (−QoE) of every action.

    ``soft``: ``q_a ∝ exp(−(c_a − min_b c_b) / T)``: actions of equal cost get equal mass, so a
    tie among interchangeable edge nodes favours none of them. ``hard``: one-hot of the argmin
    (ties go to the lowest index, the oracle's own label).
    """
    costs = np.asarray(costs, dtype=np.float64)
    if cfg.kind == "hard":
        out = np.zeros(costs.shape, dtype=np.float32)
        out[np.arange(len(costs)), costs.argmin(1)] = 1.0
        return out
    logits = -(costs - costs.min(1, keepdims=True)) / cfg.temperature
    q = np.exp(logits)
    return (q / q.sum(1, keepdims=True)).astype(np.float32)


def soft_kl(
    student_logits: torch.Tensor, soft_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T² · KL(softmax(soft/T) ‖ softmax(student/T))``, averaged over the batch."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_soft = F.log_softmax(soft_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_soft, log_target=True, reduction="batchmean")
    return temperature**2 * kl


def hard_soft_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    soft_logits: torch.Tensor,
    delta: float,
    temperature: float,
) -> torch.Tensor:
    """``δ·CE(targets) + (1 − δ)·T²·KL(soft ‖ student)`` with per-sample soft-label logits;
    ``targets`` are class indices [B] or target distributions [B, M + 1]."""
    hard = F.cross_entropy(student_logits, targets)
    if delta >= 1.0:
        return hard
    return delta * hard + (1.0 - delta) * soft_kl(student_logits, soft_logits, temperature)


def soft_weight(delta: float, temperature: float, cap: float = math.inf) -> float:
    """Weight of KECO's soft term, ``(1 − δ)·T²``, at most ``cap·δ`` (the hard term's weight
    times ``cap``), so that the soft labels never outweigh the targets unless asked to."""
    return min((1.0 - delta) * temperature**2, cap * delta)


def keco_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    soft_student_logits: torch.Tensor | None,
    soft_logits: torch.Tensor | None,
    delta: float,
    temperature: float,
    cap: float = math.inf,
) -> torch.Tensor:
    """The KECO loss ``δ·CE(targets, z) + w·KL(softmax(g/T) ‖ softmax(z'/T))`` with
    ``w = soft_weight(δ, T, cap)`` (the KL without its T², which ``w`` carries).

    ``student_logits`` and ``targets`` (indices or distributions) are the client's own
    samples; ``soft_student_logits`` are the student's logits on the rows of the soft labels
    ``soft_logits``: the same samples for the per-class table (``G[label]``), proxy states for
    proxy knowledge. Without soft labels (``None``, e.g. round 1) the loss is the CE alone.
    """
    hard = F.cross_entropy(student_logits, targets)
    if soft_logits is None or soft_student_logits is None or delta >= 1.0:
        return hard
    weight = soft_weight(delta, temperature, cap)
    soft = soft_kl(soft_student_logits, soft_logits, temperature) / temperature**2
    return delta * hard + weight * soft


def class_mean_logits(
    logits: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean logits (the soft-label format of DESIGN §5) and the sample count per class.

    Row ``c`` is the mean logit vector over samples whose hard label is ``c``; a class without
    samples gets a zero row and count 0, so weighted aggregation (Σ n·G / Σ n) ignores it.
    """
    logits = logits.detach().to(torch.float64)
    counts = torch.bincount(labels, minlength=n_classes).to(torch.float64)
    sums = torch.zeros(n_classes, logits.shape[1], dtype=torch.float64)
    sums.index_add_(0, labels, logits)
    table = sums / counts.clamp(min=1.0).unsqueeze(1)
    return table, counts


def q_distill_loss(
    student_q: torch.Tensor, teacher_q: torch.Tensor, actions: torch.Tensor | None = None
) -> torch.Tensor:
    """KD-D3QN's offline distillation loss (eq. 16): mean squared error between student and
    teacher Q-values, over all actions ("hard matching" of the whole value vector) or only at
    ``actions`` when given."""
    if actions is not None:
        student_q = student_q.gather(1, actions.view(-1, 1))
        teacher_q = teacher_q.gather(1, actions.view(-1, 1))
    return F.mse_loss(student_q, teacher_q)

"""Distillation losses and schedules: KECO's hard/soft loss, δ and T schedules, soft-label tables,
and KD-D3QN's offline Q-value matching.

KECO loss (DESIGN §4), for student logits ``z``, hard labels ``y`` and soft-label logits ``g``
(a teacher's logits, or row ``G[y]`` of the global per-class table)::

    L = δ · CE(y, z) + (1 − δ) · T² · KL(softmax(g / T) ‖ softmax(z / T))

The T² keeps the soft term's gradient on the scale of the hard term's (Hinton et al.).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.config import ScheduleConfig


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


def adapt_temperature(
    temperature: float,
    previous_loss: float | None,
    loss: float,
    tolerance: float = 0.01,
    factor: float = 0.9,
    minimum: float = 1.0,
) -> float:
    """KECO's temperature adaptation on convergence: once the loss improves by less than
    ``tolerance`` (relative), sharpen the soft labels by multiplying T by ``factor``, not
    below ``minimum``."""
    if previous_loss is None or not math.isfinite(previous_loss) or previous_loss == 0:
        return temperature
    improvement = (previous_loss - loss) / abs(previous_loss)
    if improvement < tolerance:
        return max(minimum, temperature * factor)
    return temperature


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
    hard_labels: torch.Tensor,
    soft_logits: torch.Tensor,
    delta: float,
    temperature: float,
) -> torch.Tensor:
    """``δ·CE(hard) + (1 − δ)·T²·KL(soft ‖ student)`` with per-sample soft-label logits."""
    hard = F.cross_entropy(student_logits, hard_labels)
    return delta * hard + (1.0 - delta) * soft_kl(student_logits, soft_logits, temperature)


def keco_loss(
    student_logits: torch.Tensor,
    hard_labels: torch.Tensor,
    soft_table: torch.Tensor,
    delta: float,
    temperature: float,
) -> torch.Tensor:
    """The KECO loss with global soft labels: sample ``i`` is pulled towards ``G[y_i]``."""
    return hard_soft_loss(student_logits, hard_labels, soft_table[hard_labels], delta, temperature)


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

"""Offline distillation of a student from a teacher (KD-D3QN §5.3).

The teacher's outputs on a dataset of states it visited are exported once; the student never
touches the simulator and fits them by supervised learning: KD-D3QN's MSE between Q-value
vectors, or KECO's hard/soft loss (oracle label + teacher softmax at temperature T).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from common.config import ConfigError, build, check_positive, check_positive_int, to_dict
from common.distill import (
    ScheduleConfig,
    hard_soft_loss,
    q_distill_loss,
    schedule_from_dict,
    schedule_value,
)
from common.training.common import NormalizedData, fit, permute_edges_batch

DISTILL_LOSSES = ("mse", "kd")


@dataclass(frozen=True)
class DistillConfig:
    """Offline distillation of a student from a teacher (KD-D3QN §5.3, KECO loss)."""

    loss: str = "mse"
    """``mse``: KD-D3QN's MSE between student and teacher outputs (Q-values / logits);
    ``kd``: KECO's δ·CE(oracle label) + (1 − δ)·T²·KL(teacher ‖ student)."""
    steps: int = 10000
    """Optimiser steps (KD-D3QN's DISTILL_STEPS)."""
    batch_size: int = 256
    """States per optimiser step."""
    lr: float = 1e-3
    """Adam learning rate."""
    temperature: float = 2.0
    """Softmax temperature T of the ``kd`` loss."""
    delta: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(length=10000))
    """Weight δ of the hard-label term over the optimiser steps (``kd`` loss only)."""
    permute_edges: bool = True
    """Relabel the ENs of every minibatch sample at random (states and the teacher's
    per-action outputs alike), as the students' training does."""

    def validate(self, where: str = "distill") -> DistillConfig:
        if self.loss not in DISTILL_LOSSES:
            raise ConfigError(
                f"{where}.loss must be one of {list(DISTILL_LOSSES)}, got {self.loss!r}"
            )
        check_positive_int(self.steps, f"{where}.steps")
        check_positive_int(self.batch_size, f"{where}.batch_size")
        check_positive(self.lr, f"{where}.lr")
        check_positive(self.temperature, f"{where}.temperature")
        self.delta.validate(f"{where}.delta")
        return self


def distill_from_dict(raw: Any, where: str = "distill") -> DistillConfig:
    """Build and validate a :class:`DistillConfig`."""
    d = to_dict(raw)
    delta = schedule_from_dict(d.pop("delta", {"length": d.get("steps", 10000)}), f"{where}.delta")
    return dataclasses.replace(build(DistillConfig, d, where), delta=delta).validate(where)


def teacher_outputs(teacher: nn.Module, data: NormalizedData, chunk: int = 4096) -> torch.Tensor:
    """The teacher's scores ``[n, M+1]`` on every state of ``data`` (the exported targets)."""
    teacher.eval()
    with torch.inference_mode():
        return torch.cat([
            teacher(f, h) for f, h in zip(
                data.features.split(chunk), data.history.split(chunk), strict=True)
        ]).clone()  # fmt: skip


def distill_student(
    student: nn.Module,
    data: NormalizedData,
    targets: torch.Tensor,
    cfg: DistillConfig,
    seed: int,
    steps: int | None = None,
    checkpoints: Iterable[int] = (),
    on_checkpoint: Callable[[int, nn.Module], None] | None = None,
) -> list[float]:
    """Fit ``student`` to the teacher's ``targets`` on ``data`` (in place); returns the losses.

    With ``cfg.permute_edges`` every minibatch is relabelled by random EN permutations: the
    teacher's per-action outputs move with the ENs, so the student learns them under every
    numbering (a D3QN teacher's arbitrary preference among equal nodes is not copied)."""
    augment = np.random.default_rng(seed)

    def loss_fn(net: nn.Module, idx: torch.Tensor, step: int) -> torch.Tensor:
        f, h, t, y = data.features[idx], data.history[idx], targets[idx], data.label[idx]
        if cfg.permute_edges:
            f, h, t, y = permute_edges_batch(f, h, t, y, augment)
        out = net(f, h)
        if cfg.loss == "mse":
            return q_distill_loss(out, t)
        delta = schedule_value(cfg.delta, step)
        return hard_soft_loss(out, y, t, delta, cfg.temperature)

    return fit(
        student, len(data), loss_fn, steps or cfg.steps, cfg.batch_size, cfg.lr, seed,
        checkpoints=checkpoints, on_checkpoint=on_checkpoint,
    )  # fmt: skip

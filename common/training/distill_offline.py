"""Offline distillation of a student from a teacher (KD-D3QN §5.3).

The teacher's outputs on a dataset of states it visited are exported once; the student never
touches the simulator and fits them by supervised learning: KD-D3QN's MSE between Q-value
vectors, or KECO's hard/soft loss (oracle label + teacher softmax at temperature T).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from common.config import DistillConfig
from common.distill import hard_soft_loss, q_distill_loss, schedule_value
from common.training.common import NormalizedData, fit, permute_edges_batch


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

"""Deep imitation learning (DIL, seed 002): supervised learning of the oracle's decisions (its
cost-aware targets, :class:`common.distill.TargetConfig`).

The oracle is a full-information solver; the network sees only its device's observation. Data
come from rolling out the oracle (round 0) and then, DAgger-style, the network itself, always
labelled by the oracle, so the network also learns to recover from states it visits on its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.config import ConfigError, build, check_positive, check_positive_int, finite, to_dict
from common.distill import TargetConfig, targets_from_dict
from common.mec import DeviceProfile, TaskDataset, collect_dataset, feature_scale
from common.mec.policies import make_policy
from common.mec.scenario import ScenarioConfig
from common.models import NetPolicy
from common.training.common import fit, normalize, permute_edges_batch


@dataclass(frozen=True)
class ImitationConfig:
    """Supervised imitation of the oracle's labels (DIL, seed 002)."""

    episodes: int = 40
    """Episodes simulated per data-collection round."""
    dagger_rounds: int = 1
    """Extra collection rounds with the current network as behaviour policy (labels still from
    the oracle), so it also learns the states it visits itself (DAgger)."""
    steps: int = 3000
    """Adam steps of the first round (each DAgger round adds half as many)."""
    batch_size: int = 256
    """Samples per optimiser step."""
    lr: float = 1e-3
    """Adam learning rate (KECO: 0.001)."""
    weight_decay: float = 0.0
    """Adam L2 penalty."""
    targets: TargetConfig = field(default_factory=TargetConfig)
    """Training targets from the oracle's costs."""

    def validate(self, where: str = "imitation") -> ImitationConfig:
        for name in ("episodes", "steps", "batch_size"):
            check_positive_int(getattr(self, name), f"{where}.{name}")
        if not isinstance(self.dagger_rounds, int) or self.dagger_rounds < 0:
            raise ConfigError(
                f"{where}.dagger_rounds must be an integer >= 0, got {self.dagger_rounds!r}"
            )
        check_positive(self.lr, f"{where}.lr")
        if not finite(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"{where}.weight_decay must be >= 0, got {self.weight_decay!r}")
        self.targets.validate(f"{where}.targets")
        return self


def imitation_from_dict(raw: Any, where: str = "imitation") -> ImitationConfig:
    """Build and validate an :class:`ImitationConfig`."""
    d = to_dict(raw)
    targets = targets_from_dict(d.pop("targets", {}), f"{where}.targets")
    return dataclasses.replace(build(ImitationConfig, d, where), targets=targets).validate(where)


@dataclass
class ImitationResult:
    """A trained imitation network and its learning curve."""

    net: nn.Module
    losses: list[float] = field(default_factory=list)
    """Cross-entropy of every optimiser step, over all rounds."""
    accuracy: float = 0.0
    """Agreement with the oracle's labels on the last round's data."""
    samples: int = 0
    """Labelled tasks seen in total."""


def accuracy(
    net: nn.Module, features: torch.Tensor, history: torch.Tensor, targets: torch.Tensor
) -> float:
    """Fraction of samples where the network picks an action of largest target mass (with
    cost-aware targets: one of the oracle's equally good actions; with hard ones: its label)."""
    with torch.inference_mode():
        pred = torch.cat(
            [
                net(f, h).argmax(1)
                for f, h in zip(features.split(4096), history.split(4096), strict=True)
            ]
        )
    best = targets.gather(1, pred[:, None])[:, 0] >= targets.max(1).values - 1e-6
    return float(best.float().mean())


def train_imitation(
    net: nn.Module,
    scenario: ScenarioConfig,
    cfg: ImitationConfig,
    seed: int,
    log: Callable[[str, float, int], None] | None = None,
    profiles: Sequence[DeviceProfile | None] = (None,),
    progress: str | None = None,
) -> ImitationResult:
    """Train ``net`` (any architecture of ``common.models``) on oracle labels, in place.

    Every collection round simulates ``cfg.episodes`` episodes on each of ``profiles`` (the
    devices of one or several clients; ``None`` = the scenario's own) and pools them.
    ``progress`` names the training for a progress bar per round (none when ``None``).
    """
    feat_scale, hist_scale = feature_scale(scenario)
    parts: list[TaskDataset] = []
    losses: list[float] = []
    for round_ in range(cfg.dagger_rounds + 1):
        # round 0 follows the oracle; later rounds follow the network being trained (DAgger)
        behaviour = make_policy("oracle") if round_ == 0 else NetPolicy(net, feat_scale, hist_scale)
        for i, profile in enumerate(profiles):
            parts.append(
                collect_dataset(
                    scenario,
                    behaviour,
                    cfg.episodes,
                    seed + 1000 * round_ + 100_003 * i,
                    profile=profile,
                )  # fmt: skip
            )
        data = normalize(TaskDataset.concat(parts), scenario, cfg.targets)
        augment = np.random.default_rng([seed, round_])

        def loss_fn(
            model: nn.Module, idx: torch.Tensor, step: int, data=data, augment=augment
        ) -> torch.Tensor:
            f, h, q = data.features[idx], data.history[idx], data.targets[idx]
            if cfg.targets.permute_edges:
                f, h, q, _ = permute_edges_batch(f, h, q, data.label[idx], augment)
            return F.cross_entropy(model(f, h), q)

        steps = cfg.steps if round_ == 0 else max(1, cfg.steps // 2)
        rounds = cfg.dagger_rounds + 1
        desc = None if progress is None else f"{progress} (round {round_ + 1}/{rounds})"
        round_losses = fit(
            net, len(data), loss_fn, steps, cfg.batch_size, cfg.lr, seed + round_,
            weight_decay=cfg.weight_decay, progress=desc,
        )  # fmt: skip
        losses += round_losses
        if log is not None:
            log("losses/imitation_ce", round_losses[-1], len(losses))
    last = normalize(parts[-1], scenario, cfg.targets)
    acc = accuracy(net, last.features, last.history, last.targets)
    if log is not None:
        log("charts/imitation_accuracy", acc, len(losses))
    return ImitationResult(net, losses, acc, sum(len(p) for p in parts))

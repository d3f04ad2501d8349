"""Shared pieces of the training scripts: seeding, normalised datasets, a supervised loop and
per-episode evaluation (for the mean ± std of the tables)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from common.distill import TargetConfig, cost_targets
from common.mec import DeviceProfile, TaskDataset, feature_scale, rollout, summarize
from common.mec.features import edge_permutation_index
from common.mec.scenario import ScenarioConfig
from common.progress import Progress


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CleanRL's seeding block)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class NormalizedData:
    """A :class:`TaskDataset` as normalised torch tensors, ready for minibatches."""

    features: torch.Tensor
    """[n, F] feature rows / feature scale."""
    history: torch.Tensor
    """[n, K, M] history / history scale."""
    label: torch.Tensor
    """[n] int64 oracle action."""
    targets: torch.Tensor
    """[n, M + 1] float32 target distribution (:func:`common.distill.cost_targets`)."""

    def __len__(self) -> int:
        return len(self.label)


def normalize(
    dataset: TaskDataset, scenario: ScenarioConfig, targets: TargetConfig | None = None
) -> NormalizedData:
    """Divide by :func:`common.mec.feature_scale`, the same scaling :class:`NetPolicy` applies,
    and turn the oracle's costs into targets (``targets``; default: :class:`TargetConfig`)."""
    feat_scale, hist_scale = feature_scale(scenario)
    return NormalizedData(
        features=torch.from_numpy(dataset.features / feat_scale).float(),
        history=torch.from_numpy(dataset.history / hist_scale).float(),
        label=torch.from_numpy(dataset.label).long(),
        targets=torch.from_numpy(cost_targets(dataset.costs, targets or TargetConfig())),
    )


def permute_edges_batch(
    features: torch.Tensor,
    history: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Relabel the edge nodes of every sample of a minibatch by its own random permutation.

    Features (every EN block of :mod:`common.mec.features`), history columns, per-action
    targets and the hard labels move together: new EN ``i`` of sample ``b`` is old EN
    ``perm[b, i]``. On interchangeable ENs this is the same task under another numbering, so
    training on it removes any preference for an EN index.
    """
    batch, m = history.shape[0], history.shape[2]
    perm_np = rng.permuted(np.tile(np.arange(m), (batch, 1)), axis=1)
    perm = torch.from_numpy(perm_np)
    f = torch.gather(features, 1, torch.from_numpy(edge_permutation_index(perm_np)))
    h = torch.gather(history, 2, perm[:, None, :].expand(-1, history.shape[1], -1))
    action_idx = torch.cat([torch.zeros(batch, 1, dtype=perm.dtype), perm + 1], dim=1)
    q = torch.gather(targets, 1, action_idx)
    inverse = torch.argsort(perm, dim=1)  # old EN j is now at position inverse[j]
    moved = torch.gather(inverse, 1, (labels - 1).clamp(min=0)[:, None])[:, 0] + 1
    y = torch.where(labels == 0, labels, moved)
    return f, h, q, y


LossFn = Callable[[nn.Module, torch.Tensor, int], torch.Tensor]
"""``loss_fn(net, batch_indices, step) -> loss``: the loop owns sampling, the caller the loss."""


def fit(
    net: nn.Module,
    n_samples: int,
    loss_fn: LossFn,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    weight_decay: float = 0.0,
    checkpoints: Iterable[int] = (),
    on_checkpoint: Callable[[int, nn.Module], None] | None = None,
    progress: str | None = None,
) -> list[float]:
    """Adam on minibatches drawn uniformly with replacement; returns the loss of every step.

    ``on_checkpoint(step, net)`` is called after each step listed in ``checkpoints`` (so one run
    yields the students of Table 1 at 500, 1,000, … steps). ``progress`` names the step for a
    progress bar (:class:`common.progress.Progress`); ``None`` shows none.
    """
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    marks = set(checkpoints)
    losses: list[float] = []
    net.train()
    bar = Progress(progress, steps, unit="step") if progress else None
    try:
        for step in range(1, steps + 1):
            idx = torch.randint(0, n_samples, (batch_size,), generator=gen)
            loss = loss_fn(net, idx, step - 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1, loss=losses[-1])
            if step in marks and on_checkpoint is not None:
                net.eval()
                on_checkpoint(step, net)
                net.train()
    finally:
        if bar is not None:
            bar.close()
    net.eval()
    return losses


_PER_TASK = (
    "task_delay", "task_dropped", "task_reward", "task_failed", "task_action",
    "e_local", "e_tx", "e_idle", "e_edge", "task_size",
)  # fmt: skip


def evaluate_episodes(
    scenario: ScenarioConfig,
    policy: Callable,
    episodes: int,
    seed: int,
    batch: int = 50,
    profile: DeviceProfile | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """§3 metrics over all episodes, and every metric per episode (for confidence intervals),
    on the scenario's devices or on ``profile``'s.

    Episode seeds are those of :func:`common.mec.evaluate_policy`, so every policy evaluated
    with the same ``seed`` faces the same tasks. Per-episode values use the simulator's own
    :func:`common.mec.summarize` on one-episode views, so the definitions cannot drift.
    """
    batches, seconds = rollout(scenario, policy, episodes, seed, batch, profile)
    overall = summarize(batches, seconds)
    per_episode: dict[str, list[float]] = {}
    for b in batches:
        for e in range(b.E):
            view = SimpleNamespace(E=1, T=b.T, tau=b.tau, step_seconds=b.step_seconds / b.E)
            for name in _PER_TASK:
                setattr(view, name, getattr(b, name)[e : e + 1])
            for key, value in summarize([view]).items():  # type: ignore[list-item]
                per_episode.setdefault(key, []).append(value)
    return overall, {k: np.asarray(v, dtype=np.float64) for k, v in per_episode.items()}

"""Confidence intervals for study cells: a percentile bootstrap over seeds and episodes.

A study cell (method, x, facet, metric) holds one value per training seed ``s`` and held-out
evaluation episode ``e``: a matrix ``v[s, e]``. Every method of a study is evaluated on the same
episodes, so seeds and episodes are crossed factors: the training seed moves a learned policy,
the episode draw moves every policy (a heuristic's only source of spread). The estimate is the
mean of ``v``; its 95 % interval comes from resampling seeds and episodes independently, with
replacement, and taking the 2.5th and 97.5th percentiles of the resampled means (a crossed
two-way bootstrap). A paired difference against a reference (``v[s, e] − ref[s, e]`` on the same
episodes) gets its interval the same way; pairing removes the episode-to-episode spread that
both share.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SAMPLES = 4000
"""Resamples per interval."""
BOOTSTRAP_SEED = 20_261_201
"""Fixed: a report is the same every time it is made from the same results."""
LEVEL = 0.95


def bootstrap_ci(
    values: np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of a [seeds, episodes] matrix (a vector counts as one seed).

    Seeds and episodes are resampled independently with replacement; the interval is the
    percentile interval of the resampled grand means. One seed and one episode give a
    zero-width interval (nothing to resample).
    """
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError("bootstrap_ci needs a non-empty matrix of finite values")
    n_seeds, n_episodes = v.shape
    mean = float(v.mean())
    if v.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    # multinomial counts of how often each seed / episode is drawn in each resample
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=samples)
    episode_counts = rng.multinomial(n_episodes, np.full(n_episodes, 1.0 / n_episodes), samples)
    means = ((seed_counts @ v) * episode_counts).sum(1) / (n_seeds * n_episodes)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)

"""Bootstrap intervals over seeds and episodes."""

import numpy as np
import pytest

from experiments.stats import bootstrap_ci


def test_interval_of_iid_episodes_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    values = rng.normal(10.0, 2.0, size=(1, 400))  # one seed, 400 episodes
    mean, low, high = bootstrap_ci(values)
    assert mean == pytest.approx(values.mean())
    half = 1.96 * values.std(ddof=1) / np.sqrt(400)
    assert high - low == pytest.approx(2 * half, rel=0.1)
    assert low < 10.0 < high


def test_seeds_and_episodes_both_count():
    # every seed shifts all its episodes (training spread); episodes vary too
    rng = np.random.default_rng(1)
    seed_shift = np.array([-1.0, 0.0, 1.0, 0.5, -0.5])[:, None]
    episodes = rng.normal(0.0, 0.1, size=(1, 8))
    values = 30.0 + seed_shift + episodes
    _, low, high = bootstrap_ci(values)
    _, ep_low, ep_high = bootstrap_ci(values[:1])  # one seed: episode spread only
    assert high - low > 5 * (ep_high - ep_low)  # the seeds dominate
    # a heuristic has no training spread: identical seeds give the episodes' interval alone
    same = np.repeat(values[:1], 5, axis=0)
    assert bootstrap_ci(same)[1:] == pytest.approx((ep_low, ep_high), abs=0.02)


def test_degenerate_and_bad_input():
    assert bootstrap_ci(np.array([[3.5]])) == (3.5, 3.5, 3.5)
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci(np.array([[1.0, np.nan]]))
    # deterministic: the same interval every time
    values = np.random.default_rng(2).normal(size=(3, 6))
    assert bootstrap_ci(values) == bootstrap_ci(values)

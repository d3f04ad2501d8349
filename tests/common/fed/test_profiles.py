"""Client device profiles and the compute-time model."""

import numpy as np
import pytest

from common.fed import client_profile, compute_seconds
from common.mec.scenario import load_scenario


def test_profiles_differ_per_partition_and_repeat_per_seed():
    sc = load_scenario("qeco")
    a, b = client_profile(sc, 0, 0.8, 2.0, 0), client_profile(sc, 1, 0.8, 2.0, 0)
    again = client_profile(sc, 0, 0.8, 2.0, 0)
    assert not np.allclose(a.devices.arrival_prob, b.devices.arrival_prob)
    assert a.speed_gflops != b.speed_gflops
    np.testing.assert_array_equal(a.devices.arrival_prob, again.devices.arrival_prob)
    np.testing.assert_array_equal(a.devices.alpha, again.devices.alpha)
    assert set(np.unique(a.devices.alpha)) <= set(sc.alpha_modes)
    assert set(np.unique(a.devices.density)) <= set(sc.density_gcycles_per_mbit)


def test_heterogeneity_knob():
    sc = load_scenario("qeco")
    iid = [client_profile(sc, i, 0.0, 2.0, 0) for i in range(8)]
    rates = [p.devices.arrival_prob.mean() for p in iid]
    assert np.std(rates) < 0.01  # only the small per-device spread remains
    assert all(p.speed_gflops == 2.0 for p in iid)
    assert all(p.devices.size_scale[0] == 1.0 for p in iid)
    wild = [client_profile(sc, i, 1.0, 2.0, 0) for i in range(8)]
    assert np.std([p.devices.arrival_prob.mean() for p in wild]) > 0.03
    speeds = [p.speed_gflops for p in wild]
    assert max(speeds) / min(speeds) > 2.0


def test_bad_partition():
    with pytest.raises(ValueError, match="partition_id"):
        client_profile(load_scenario("qeco"), -1, 0.5, 2.0, 0)


def test_compute_seconds():
    t_logits, t_train = compute_seconds(1000, 2, 5000, 20000, 1.0)
    assert t_logits == pytest.approx(2 * 20000 * 1000 / 1e9)
    assert t_train == pytest.approx(t_logits + 6 * 5000 * 1000 * 2 / 1e9)

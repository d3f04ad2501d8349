"""The observation row: hand-computed public EN signals, the layout, EN relabelling."""

import numpy as np
import pytest

from common.mec import MECBatch, feature_scale, n_features
from common.mec import features as fl
from common.mec.scenario import load_scenario


def two_devices(**overrides):
    """Two devices, two edge nodes; arrivals injected by the tests."""
    base = dict(
        n_devices=2, n_edges=2, n_slots=5, deadline_slots=10, alpha_modes=[0.5],
        density_gcycles_per_mbit=[0.297], local_ghz=2.5, edge_ghz=[40.0, 20.0], rate_mbps=14.0,
    )  # fmt: skip
    base.update(overrides)
    return load_scenario("qeco", **base)


def test_layout_names_every_column_once():
    names = fl.column_names(3)
    assert len(names) == n_features(3) == 6 + 5 * 3 and len(set(names)) == len(names)
    assert names[fl.edge_block("edge_queues", 3)] == [f"edge_queues[{j}]" for j in (1, 2, 3)]
    assert names[fl.DENSITY] == "density"


def test_public_signals_count_transfers_in_progress():
    sc = two_devices()
    sim = MECBatch(sc, 1)
    sizes = np.zeros((1, sc.n_time, 2))
    sizes[0, 0] = [2.8, 4.2]  # slot 0: both devices send to EN 2
    sizes[0, 1] = [1.0, 0.0]
    sim.reset(seed=0, sizes=sizes)
    obs, _ = sim.step(np.array([[2, 2]]))  # 1.4 Mbit of each sent in slot 0
    f = obs.features[0, 0]
    m = 2
    # nothing has reached an EN yet: the load is what is being sent to EN 2
    np.testing.assert_allclose(f[fl.edge_block("backlog_mbit", m)], [0.0, 0.0])
    np.testing.assert_allclose(f[fl.edge_block("edge_load_mbit", m)], [0.0, 1.4 + 2.8])
    np.testing.assert_array_equal(f[fl.edge_block("edge_queues", m)], [0, 2])
    np.testing.assert_allclose(f[fl.edge_block("edge_ghz", m)], [40.0, 20.0])
    np.testing.assert_array_equal(f[fl.edge_block("edge_mem_free_gb", m)], [0.0, 0.0])
    obs, _ = sim.step(np.array([[0, 0]]))  # slot 1: device 0's task lands at EN 2
    f0, f1 = obs.features[0, 0], obs.features[0, 1]
    np.testing.assert_allclose(f0[fl.edge_block("backlog_mbit", m)], [0.0, 2.8])
    np.testing.assert_allclose(f1[fl.edge_block("backlog_mbit", m)], [0.0, 0.0])  # own only
    # public blocks are the same for every device: 2.8 waiting + 1.4 of device 1 in flight
    for row in (f0, f1):
        np.testing.assert_allclose(row[fl.edge_block("edge_load_mbit", m)], [0.0, 2.8 + 1.4])
        np.testing.assert_array_equal(row[fl.edge_block("edge_queues", m)], [0, 2])


def test_heterogeneous_world_broadcasts_free_cpu_and_memory():
    sc = two_devices(
        edge_mem_gb=[8.0, 4.0], task_mem_gb_min=1.0, task_mem_gb_max=1.0,
        pressure={"cpu_level": 0.5, "mem_level": 0.25, "edges_fraction": 0.5},
    )  # fmt: skip
    sim = MECBatch(sc, 1)
    sizes = np.zeros((1, sc.n_time, 2))
    sizes[0, 0] = [1.4, 0.0]
    sizes[0, 2] = [0.0, 2.0]
    sim.reset(seed=0, sizes=sizes)
    obs = sim.observe()
    f = obs.features[0, 0]
    assert f[fl.TASK_MEM_GB] == pytest.approx(1.0)
    np.testing.assert_allclose(f[fl.edge_block("edge_ghz", 2)], [40.0 * 0.5, 20.0])
    np.testing.assert_allclose(f[fl.edge_block("edge_mem_free_gb", 2)], [8.0 * 0.75, 4.0])
    obs, _ = sim.step(np.array([[1, 0]]))  # 1.4 Mbit sent to EN 1 in slot 0: holds 1 GB there
    np.testing.assert_allclose(
        obs.features[0, 1, fl.edge_block("edge_mem_free_gb", 2)], [8.0 * 0.75 - 1.0, 4.0]
    )
    obs, _ = sim.step(np.array([[0, 0]]))  # served in slot 1: the memory is free again
    np.testing.assert_allclose(obs.features[0, 1, fl.edge_block("edge_mem_free_gb", 2)], [6.0, 4.0])


def test_feature_scale_covers_every_column():
    sc = load_scenario("keco")
    scale, hist = feature_scale(sc)
    assert scale.shape == (n_features(sc.n_edges),) and (scale > 0).all()
    assert hist == max(1, sc.n_devices // sc.n_edges)


def test_permute_edges_moves_every_block_and_the_actions_together():
    m = 3
    rng = np.random.default_rng(0)
    f = rng.random((4, n_features(m))).astype(np.float32)
    h = rng.random((4, 2, m)).astype(np.float32)
    q = rng.random((4, m + 1)).astype(np.float32)
    perm = np.array([[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]])
    pf, ph = fl.permute_edges(f, h, perm)
    pq = fl.permute_actions(q, perm)
    for b in range(4):
        np.testing.assert_array_equal(pf[b, :6], f[b, :6])  # the device's own scalars stay
        for name in fl.EDGE_FIELDS:
            cols = fl.edge_block(name, m)
            np.testing.assert_array_equal(pf[b, cols], f[b, cols][perm[b]])
        np.testing.assert_array_equal(ph[b], h[b][:, perm[b]])
        assert pq[b, 0] == q[b, 0]
        np.testing.assert_array_equal(pq[b, 1:], q[b, 1:][perm[b]])


def test_features_are_built_on_first_read_and_never_from_a_later_slot():
    sc = two_devices()
    sim = MECBatch(sc, 1)
    obs = sim.reset(seed=0)
    first = sim.observe().features  # read in its slot: built from that slot's state
    sim.step(np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(RuntimeError, match="read obs.features before calling step"):
        obs.features  # noqa: B018 - reading it is the point
    again = sim.observe()
    kept = again.features
    sim.step(np.zeros((1, 2), dtype=np.int64))
    assert again.features is kept  # once read, the rows stay those of their slot
    assert first.shape == kept.shape == (1, 2, n_features(2))

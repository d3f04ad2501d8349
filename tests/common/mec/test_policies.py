"""Heuristic and oracle policies: validity, behaviour, and the oracle as the upper reference."""

import numpy as np
import pytest

from common.mec import MECBatch, collect_dataset, evaluate_policy, n_features
from common.mec.policies import HEURISTICS, POLICIES, make_policy, oracle
from common.mec.scenario import load_scenario


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_actions_are_valid(name):
    sc = load_scenario("qeco", n_devices=8, n_slots=20)
    sim = MECBatch(sc, 3)
    obs = sim.reset(seed=0)
    while not sim.done:
        a = POLICIES[name](obs, sim)
        assert a.shape == (3, 8) and a.min() >= 0 and a.max() <= sc.n_edges
        obs, _ = sim.step(a)


def test_simple_policies_do_what_they_say():
    sc = load_scenario("qeco", n_devices=10, n_slots=30)
    sim = MECBatch(sc, 2)
    obs = sim.reset(seed=0)
    assert (POLICIES["all_local"](obs, sim) == 0).all()
    assert (POLICIES["all_offload"](obs, sim) >= 1).all()
    m = evaluate_policy(sc, POLICIES["random"], 20, seed=0)
    assert m["offload_ratio"] == pytest.approx(5 / 6, abs=0.03)


def test_load_balance_spreads_a_slot_over_the_nodes_and_beats_random():
    # twenty identical devices with a large task in slot 0 see the same broadcast: the two
    # random candidates of each device spread them over the nodes instead of herding them
    sc = load_scenario("tang2020", n_devices=20, n_slots=1)
    sim = MECBatch(sc, 1)
    sizes = np.zeros((1, sc.n_time, 20))
    sizes[0, 0] = 4.9
    sim.reset(seed=0, sizes=sizes)
    sim.local_mbit[:] = 0.1  # a slow device CPU: every task is offloaded
    a = POLICIES["load_balance"](sim.observe(), sim)[0]
    assert (a >= 1).all()
    assert np.bincount(a, minlength=6)[1:].max() <= 8  # herding would put all 20 on one node
    sc = load_scenario("seed001", arrival_prob=0.4)
    lb = evaluate_policy(sc, POLICIES["load_balance"], 4, seed=0)
    assert lb["qoe"] > evaluate_policy(sc, POLICIES["random"], 4, seed=0)["qoe"] + 5


def test_unknown_policy_lists_valid_names():
    with pytest.raises(ValueError, match="valid policies are"):
        make_policy("telepathy")


@pytest.mark.parametrize("preset", ["tang2020", "qeco", "seed001"])
def test_oracle_beats_every_heuristic(preset):
    sc = load_scenario(preset)
    results = {n: evaluate_policy(sc, POLICIES[n], 20, seed=7) for n in (*HEURISTICS, "oracle")}
    for name in HEURISTICS:
        assert results["oracle"]["qoe"] >= results[name]["qoe"], name
    assert results["oracle"]["drop_ratio"] < results["all_local"]["drop_ratio"]


@pytest.mark.slow
def test_oracle_beats_every_heuristic_on_keco():
    sc = load_scenario("keco")
    results = {n: evaluate_policy(sc, POLICIES[n], 20, seed=7) for n in (*HEURISTICS, "oracle")}
    for name in HEURISTICS:
        assert results["oracle"]["qoe"] >= results[name]["qoe"], name


def test_dataset_records_oracle_labels_and_costs():
    sc = load_scenario("qeco", n_devices=10, n_slots=30)
    ds = collect_dataset(sc, POLICIES["random"], episodes=3, seed=0, batch=2)
    m = evaluate_policy(sc, POLICIES["random"], 3, seed=0, batch=2)
    assert len(ds) == m["tasks"]
    assert ds.features.shape == (len(ds), n_features(sc.n_edges))
    assert ds.history.shape == (len(ds), sc.history_slots, sc.n_edges)
    assert ds.costs.shape == (len(ds), sc.n_edges + 1)
    # the label is the action of least predicted cost
    np.testing.assert_array_equal(ds.label, ds.costs.argmin(1))
    assert (ds.features[:, 0] > 0).all()  # only slots where a task arrived
    # the behaviour policy's actions are recorded, not the oracle's
    assert (ds.action != ds.label).mean() > 0.3


def test_oracle_spreads_load_within_a_slot():
    # many identical devices, all with a task in slot 0: the oracle must not herd them
    sc = load_scenario("tang2020", n_devices=20, n_slots=1)
    sim = MECBatch(sc, 1)
    sizes = np.zeros((1, sc.n_time, 20))
    sizes[0, 0] = 4.0
    obs = sim.reset(seed=0, sizes=sizes)
    a = oracle(obs, sim)[0]
    counts = np.bincount(a, minlength=sc.n_edges + 1)[1:]
    assert counts.max() - counts.min() <= 1

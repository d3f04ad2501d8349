"""Simulator semantics: determinism, conservation, hand-computed cases, energy, KECO extensions."""

import math

import numpy as np
import pytest

from common.mec import DeviceProfile, MECBatch, evaluate_policy
from common.mec import features as fl
from common.mec.policies import POLICIES, make_policy
from common.mec.scenario import load_scenario
from common.mec.sim import DONE, DROPPED, FAILED


def tiny(**overrides):
    """One or two devices, one edge node, QECO-style energy; sizes are injected by the tests."""
    base = dict(
        n_devices=1, n_edges=1, n_slots=5, deadline_slots=10, alpha_modes=[0.5],
        density_gcycles_per_mbit=[0.297], local_ghz=2.5, edge_ghz=[41.8], rate_mbps=14.0,
        energy="power", p_comp_w=2.0, p_tx_w=2.3, p_idle_w=0.1, p_edge_w=5.0,
    )  # fmt: skip
    base.update(overrides)
    return load_scenario("qeco", **base)


def run(scenario, sizes, actions):
    """Run one episode with injected arrivals; ``actions`` [T, N] used at every slot."""
    sim = MECBatch(scenario, 1)
    T, N = scenario.n_time, scenario.n_devices
    s = np.zeros((1, T, N))
    s[0, : len(sizes)] = sizes
    sim.reset(seed=0, sizes=s)
    acts = np.zeros((T, N), dtype=np.int64)
    acts[: len(actions)] = actions
    t = 0
    while not sim.done:
        sim.step(acts[t][None, :])
        t += 1
    return sim


def test_single_local_task():
    sim = run(tiny(), [[2.0]], [[0]])
    cap = 2.5 * 0.1 / 0.297  # Mbit per slot
    assert sim.task_delay[0, 0, 0] == math.ceil(2.0 / cap) == 3
    assert not sim.task_dropped[0, 0, 0]
    # power model: p_comp · cycles / f_L
    assert sim.e_local[0, 0, 0] == pytest.approx(2.0 * 2.0 * 0.297 / 2.5)
    reward = 4 * 10 - 2 * (0.5 * 3 + 0.5 * 0.5 * sim.e_local[0, 0, 0])
    assert sim.task_reward[0, 0, 0] == pytest.approx(reward)


def test_single_offloaded_task():
    sim = run(tiny(), [[2.8]], [[1]])
    # transmit 2.8 Mbit at 1.4 Mbit/slot in slots 0-1, edge serves it in slot 2 (14.07 Mbit/slot)
    assert sim.task_delay[0, 0, 0] == 3
    assert sim.e_tx[0, 0, 0] == pytest.approx(2.3 * 2.8 / 14.0)
    edge_cap = 41.8 * 0.1 / 0.297
    assert sim.e_edge[0, 0, 0] == pytest.approx(5.0 * 0.1 * 2.8 / edge_cap)
    # idle from the end of transmission (t = 2.0 slots) to the end of edge service
    assert sim.e_idle[0, 0, 0] == pytest.approx(0.1 * 0.1 * 2.8 / edge_cap)
    assert sim.e_local[0, 0, 0] == 0.0


def test_deadline_drop_local():
    sc = tiny(deadline_slots=5)
    sim = run(sc, [[4.9]], [[0]])  # needs ceil(4.9 / 0.8418) = 6 slots > 5
    assert sim.task_dropped[0, 0, 0]
    assert sim.task_delay[0, 0, 0] == 5
    assert sim.task_done_slot[0, 0, 0] == 4
    m = sim.metrics()
    assert m["drop_ratio"] == 1.0 and m["delay"] == 5.0
    assert math.isnan(m["delay_completed"])
    assert sim.task_reward[0, 0, 0] < 0  # no R_base for a dropped task


def test_fifo_local_queue_waits():
    # two tasks, slots 0 and 1, 2.0 Mbit each: 3 slots each, second waits for the first
    sim = run(tiny(), [[2.0], [2.0]], [[0], [0]])
    assert sim.task_delay[0, 0, 0] == 3
    assert sim.task_delay[0, 1, 0] == 5  # arrives slot 1, starts slot 3, ends slot 5


def test_two_devices_share_one_edge_node():
    sc = tiny(n_devices=2, edge_ghz=[2.0])
    cap_alone = 2.0 * 0.1 / 0.297  # 0.673 Mbit/slot
    alone = run(sc, [[1.4, 0.0]], [[1, 1]])
    assert alone.task_delay[0, 0, 0] == 1 + math.ceil(1.4 / cap_alone) == 4
    both = run(sc, [[1.4, 1.4]], [[1, 1]])
    # both queues active at the end of slot 0: each gets half of the node from slot 1 on
    assert both.task_delay[0, 0, 0] == both.task_delay[0, 0, 1] == 1 + math.ceil(2.8 / cap_alone)


def test_edge_share_uses_previous_slot_activity():
    # device 1's task arrives at the EN one slot later, so device 0 runs alone in its first slot
    sc = tiny(n_devices=2, edge_ghz=[2.0])
    sim = run(sc, [[1.4, 2.8]], [[1, 1]])
    cap = 2.0 * 0.1 / 0.297
    # device 0: slot 1 alone (0.673), then shared (0.337 per slot): 1.4 - 0.673 = 0.727 → 3 slots
    assert sim.task_delay[0, 0, 0] == 1 + 1 + math.ceil((1.4 - cap) / (cap / 2))


def test_memory_pressure_failure():
    sc = tiny(
        edge_mem_gb=[1.0], task_mem_gb_min=0.8, task_mem_gb_max=0.8,
        pressure={"mem_level": 0.5, "cpu_level": 0.0},
    )  # fmt: skip
    sim = run(sc, [[1.4]], [[1]])
    assert sim.task_status[0, 0, 0] == FAILED
    assert sim.task_failed[0, 0, 0] and sim.task_dropped[0, 0, 0]
    assert sim.metrics()["offload_failures"] == 1.0
    ok = run(tiny(edge_mem_gb=[1.0], task_mem_gb_min=0.4, task_mem_gb_max=0.4,
                  pressure={"mem_level": 0.5}), [[1.4]], [[1]])  # fmt: skip
    assert ok.task_status[0, 0, 0] == DONE
    assert ok.mem_used[0, 0] == pytest.approx(0.0)  # memory released on completion


def test_memory_is_held_while_at_the_node():
    # 0.6 GB free; the first task holds 0.4 GB, so the second (0.4 GB) fails
    sc = tiny(
        n_devices=2, edge_ghz=[1.0], edge_mem_gb=[0.6], task_mem_gb_min=0.4,
        task_mem_gb_max=0.4,
    )  # fmt: skip
    sim = run(sc, [[1.4, 0.0], [0.0, 1.4]], [[1, 1], [1, 1]])
    assert sim.task_status[0, 0, 0] == DONE
    assert sim.task_status[0, 1, 1] == FAILED


def test_cpu_pressure_failure():
    # a 4 Mbit task needs 4·0.297/(10·0.1) = 1.19 GHz; 4 GHz at 75 % pressure leaves 1 GHz
    sc = tiny(edge_ghz=[4.0], pressure={"cpu_level": 0.75})
    sim = run(sc, [[4.0]], [[1]])
    assert sim.task_status[0, 0, 0] == FAILED
    ok = run(tiny(edge_ghz=[4.0], pressure={"cpu_level": 0.2}), [[4.0]], [[1]])
    assert ok.task_status[0, 0, 0] == DONE
    # 3 transmit slots, then 1.188 Gcycles at 0.32 Gcycles per slot
    assert ok.task_delay[0, 0, 0] == 3 + math.ceil(4.0 * 0.297 / (4.0 * 0.8 * 0.1))


def test_dvfs_energy():
    sc = tiny(energy="dvfs", kappa=1e-27)
    sim = run(sc, [[2.0]], [[0]])
    cycles = 2.0 * 0.297e9
    assert sim.e_local[0, 0, 0] == pytest.approx(1e-27 * (2.5e9) ** 2 * cycles)


def test_energy_none_is_delay_only():
    sim = run(load_scenario("tang2020", n_devices=1, n_slots=3), [[2.0]], [[0]])
    assert sim.task_reward[0, 0, 0] == pytest.approx(40 - 2 * 3)


def test_shannon_rate_without_fading():
    sc = tiny(channel="shannon", fading="none", bandwidth_mhz=2.0, snr_db=20.0)
    rate = 2.0 * math.log2(1 + 100.0)  # 13.3 Mbit/s
    sim = run(sc, [[4.0]], [[1]])
    tx_slots = math.ceil(4.0 / (rate * 0.1))
    assert sim.task_delay[0, 0, 0] == tx_slots + 1
    assert sim.e_tx[0, 0, 0] == pytest.approx(2.3 * 4.0 / rate)


def test_kkt_allocation_splits_by_sqrt_backlog():
    sc = tiny(n_devices=2, edge_ghz=[2.0], edge_allocation="kkt")
    sim = MECBatch(sc, 1)
    s = np.zeros((1, sc.n_time, 2))
    s[0, 0] = [1.4, 5.6]
    sim.reset(seed=0, sizes=s)
    sim.step(np.array([[1, 1]]))
    for _ in range(4):  # both transmitted by slot 3 (5.6 Mbit at 1.4 Mbit/slot)
        sim.step(np.array([[1, 1]]))
    assert sim.share[0, :, 0].sum() == pytest.approx(1.0)
    cycles = (sim.ep_rem[0, :, 0] + sim.eq_mbit[0, :, 0]) * 0.297
    if (cycles > 0).all():
        expect = np.sqrt(cycles) / np.sqrt(cycles).sum()
        np.testing.assert_allclose(sim.share[0, :, 0], expect)


@pytest.mark.parametrize("preset", ["tang2020", "qeco"])
@pytest.mark.parametrize("policy", ["all_local", "random", "greedy", "oracle"])
def test_conservation(preset, policy):
    sc = load_scenario(preset)
    sim = MECBatch(sc, 4)
    obs = sim.reset(seed=3)
    while not sim.done:
        obs, _ = sim.step(make_policy(policy)(obs, sim))
    arrived = sim.task_size > 0
    ended = np.isin(sim.task_status, [DONE, DROPPED, FAILED])
    assert (ended == arrived).all()  # every arrived task ends exactly once, nothing else does
    assert sim.unresolved == 0  # everything resolved inside the drain slots
    assert (sim.task_dropped[arrived] == (sim.task_status[arrived] != DONE)).all()
    assert np.isnan(sim.task_delay[~arrived]).all()
    d = sim.task_delay[arrived]
    assert d.min() >= 1 and d.max() <= sc.deadline_slots
    assert sim.completions.sum() == (sim.task_status == DONE).sum()
    assert (sim.lq_cnt == 0).all() and (sim.txq_cnt == 0).all() and (sim.eq_cnt == 0).all()
    np.testing.assert_allclose(sim.lq_mbit, 0, atol=1e-9)
    np.testing.assert_allclose(sim.eq_mbit, 0, atol=1e-9)


def test_determinism_and_batch_independence():
    sc = load_scenario("qeco")
    a = evaluate_policy(sc, POLICIES["random"], episodes=6, seed=11, batch=6)
    b = evaluate_policy(sc, POLICIES["random"], episodes=6, seed=11, batch=4)
    c = evaluate_policy(sc, POLICIES["random"], episodes=6, seed=12, batch=6)
    for k in ("qoe", "delay", "drop_ratio", "energy_total", "tasks"):
        assert a[k] == pytest.approx(b[k], rel=1e-12)
    assert a["qoe"] != c["qoe"]


def test_arrivals_follow_the_scenario():
    sc = load_scenario("tang2020")
    sim = MECBatch(sc, 20)
    sim.reset(seed=0)
    sizes = sim.task_size[:, : sc.n_slots]
    rate = (sizes > 0).mean()
    assert rate == pytest.approx(0.3, abs=0.01)
    s = sizes[sizes > 0]
    assert s.min() >= 2.0 and s.max() <= 4.9 + 1e-9
    np.testing.assert_allclose(s * 10, np.round(s * 10), atol=1e-6)  # 0.1-Mbit grid
    assert (sim.task_size[:, sc.n_slots :] == 0).all()  # drain slots


def test_task_volume_sets_the_arrival_rate():
    sc = load_scenario("keco", n_devices=20, n_edges=4, n_slots=200, task_volume=1000,
                       edge_ghz=[20.0], edge_mem_gb=[8.0])  # fmt: skip
    assert sc.effective_arrival_prob == pytest.approx(0.25)
    m = evaluate_policy(sc, POLICIES["greedy"], episodes=10, seed=0, batch=10)
    assert m["tasks"] / 10 == pytest.approx(1000, rel=0.05)
    assert m["throughput"] > 0


def test_pressure_increases_failures():
    base = dict(n_devices=20, n_edges=4, n_slots=200, task_volume=1500, edge_ghz=[8.0],
                edge_mem_gb=[2.0])  # fmt: skip
    calm = evaluate_policy(load_scenario("keco", **base), POLICIES["all_offload"], 5, 0)
    mem = evaluate_policy(
        load_scenario("keco", **base, pressure={"mem_level": 0.8}), POLICIES["all_offload"], 5, 0
    )
    cpu = evaluate_policy(
        load_scenario("keco", **base, pressure={"cpu_level": 0.9}), POLICIES["all_offload"], 5, 0
    )
    assert calm["offload_failures"] < mem["offload_failures"]
    assert calm["offload_failures"] < cpu["offload_failures"]


def test_profile_makes_devices_differ():
    sc = load_scenario("qeco", n_devices=4)
    prof = DeviceProfile(arrival_prob=np.array([0.0, 0.2, 0.6, 1.0]),
                         alpha=np.array([0.25, 0.5, 0.75, 0.25]))  # fmt: skip
    sim = MECBatch(sc, 30, prof)
    sim.reset(seed=1)
    rate = (sim.task_size[:, : sc.n_slots] > 0).mean(axis=(0, 1))
    np.testing.assert_allclose(rate, [0.0, 0.2, 0.6, 1.0], atol=0.03)
    assert (sim.alpha == [0.25, 0.5, 0.75, 0.25]).all()
    with pytest.raises(ValueError, match="profile.alpha"):
        MECBatch(sc, 1, DeviceProfile(alpha=np.ones(3)))


def test_step_validates_actions():
    sc = load_scenario("tang2020", n_devices=3)
    sim = MECBatch(sc, 2)
    sim.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        sim.step(np.zeros((2, 4), dtype=int))
    sizes = np.zeros((2, sc.n_time, 3))
    sizes[:, 0] = 2.0
    sim.reset(seed=0, sizes=sizes)
    with pytest.raises(ValueError, match=r"0\.\.5"):
        sim.step(np.full((2, 3), 9))
    with pytest.raises(RuntimeError, match="reset"):
        s = MECBatch(sc, 1)
        s.step(np.zeros((1, 3), dtype=int))


def test_observation_features():
    sc = tiny(n_devices=1)
    sim = MECBatch(sc, 1)
    s = np.zeros((1, sc.n_time, 1))
    s[0, 0], s[0, 1] = 2.8, 2.0
    sim.reset(seed=0, sizes=s)
    obs, _ = sim.step(np.array([[1]]))  # slot 0: 1.4 of 2.8 Mbit sent
    f = obs.features[0, 0]
    assert obs.mask[0, 0] and f[fl.TASK_MBIT] == pytest.approx(2.0)
    assert f[fl.DENSITY] == pytest.approx(0.297)
    assert f[fl.LOCAL_WAIT] == 0.0  # local queue empty
    assert f[fl.TX_WAIT] == pytest.approx(1.4 / 1.4)  # one slot of transmission left
    assert f[fl.edge_block("backlog_mbit", 1)][0] == 0.0 and f[fl.ALPHA] == pytest.approx(0.5)
    obs, _ = sim.step(np.array([[0]]))  # slot 1: transmission ends, task waits at the EN
    assert obs.features[0, 0, fl.edge_block("backlog_mbit", 1)][0] == pytest.approx(2.8)
    assert obs.history[0, -1, 0] == 1  # one active queue at the EN


def test_transmission_uses_each_slots_fading():
    sc = tiny(channel="shannon", fading="rayleigh", bandwidth_mhz=2.0, snr_db=20.0)
    sim = MECBatch(sc, 1)
    s = np.zeros((1, sc.n_time, 1))
    s[0, 0] = 2.5
    sim.reset(seed=0, sizes=s)
    sim.fading[0, :, 0] = [0.01, 1.0, 1.0] + [1.0] * (sc.n_time - 3)  # a deep fade in slot 0
    while not sim.done:
        sim.step(np.array([[1]]))
    r = [0.1 * 2.0 * math.log2(1 + 100 * h) for h in (0.01, 1.0, 1.0)]
    assert r[0] + r[1] < 2.5 <= sum(r)  # transmission ends in slot 2
    assert sim.task_delay[0, 0, 0] == 4  # edge service in slot 3
    sent = 2.5 - r[0] - r[1]
    assert sim.e_tx[0, 0, 0] == pytest.approx(2.3 * 0.1 * (2 + sent / r[2]))


def test_kkt_allocation_stays_finite_over_whole_episodes():
    """Remaining work can round to a tiny negative number; the KKT shares (sqrt of the cycles)
    must stay finite, or NaN observations reach the learners (client 5's devices hit it)."""
    from common.fed import client_profile

    sc = load_scenario("seed001", edge_allocation="kkt", n_slots=40)
    profile = client_profile(sc, 5, 0.8, 2.0, 0).devices
    with np.errstate(invalid="raise"):
        m = evaluate_policy(sc, make_policy("random"), 1, 5, profile=profile)
    assert np.isfinite(m["qoe"]) and m["tasks"] > 0

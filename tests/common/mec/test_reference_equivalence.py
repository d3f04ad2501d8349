"""The vectorised ``MECBatch`` must reproduce the scalar reference (``reference.py``) exactly.

Each case runs a few episodes of ``MECBatch`` with a policy, then feeds the simulator's own
arrivals and the actions it was given to ``run_reference`` and requires the per-task delays,
drop flags and resolution slots, and the per-slot active-queue counts, to be identical.
A few hand-computed cases pin down the reference itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from common.mec import MECBatch
from common.mec.scenario import load_scenario
from tests.common.mec.reference import run_reference

# Shrunk versions of the presets used in the fog_env comparison (fewer slots / devices).
SCENARIOS = {
    "tang2020": dict(n_slots=30),
    # the QECO preset: 3 densities drawn per MD (energy does not change delays)
    "qeco": dict(preset="qeco", n_devices=30, n_slots=30),
    # p = 0.5, f_E = 20, R = 8, D = 6, 20 MDs, 3 ENs, sizes U[1, 7)
    "variant": dict(
        n_devices=20,
        n_edges=3,
        arrival_prob=0.5,
        edge_ghz=[20.0],
        rate_mbps=8.0,
        deadline_slots=6,
        task_mbit_min=1.0,
        task_mbit_max=7.0,
        n_slots=40,
    ),
    # light load, heterogeneous ENs and per-MD densities: many completions at the edge
    "hetero": dict(
        n_devices=16,
        n_edges=3,
        arrival_prob=0.25,
        local_ghz=5.0,
        edge_ghz=[30.0, 12.0, 41.8],
        rate_mbps=10.0,
        deadline_slots=8,
        task_mbit_min=1.0,
        task_mbit_max=4.0,
        density_gcycles_per_mbit=[0.197, 0.297, 0.397],
        n_slots=40,
    ),
    # tiny and congested: queues full of expired tasks
    "congested": dict(
        n_devices=6,
        n_edges=2,
        arrival_prob=0.9,
        edge_ghz=[8.0],
        rate_mbps=5.0,
        deadline_slots=4,
        task_mbit_min=1.0,
        task_mbit_max=7.0,
        n_slots=40,
    ),
}
POLICIES = ("all_local", "all_offload", "random", "mixed")
SEEDS = (0, 1)
N_EPISODES = 3


def _policy_actions(policy: str, rng: np.random.Generator, shape: tuple, n_edges: int):
    """Actions [E, T, N] for every slot (also where no task arrives; those are ignored)."""
    E, T, N = shape
    if policy == "all_local":
        return np.zeros(shape, dtype=np.int64)
    if policy == "all_offload":
        return rng.integers(1, n_edges + 1, size=shape)
    if policy == "random":
        return rng.integers(0, n_edges + 1, size=shape)
    if policy == "mixed":
        # each MD has its own action distribution, and some MDs switch in blocks of slots
        probs = rng.dirichlet(np.full(n_edges + 1, 0.5), size=(E, N))  # [E, N, M + 1]
        u = rng.random((E, T, N, 1))
        acts = (u > np.cumsum(probs, -1)[:, None]).sum(-1).clip(0, n_edges)
        block = rng.integers(0, n_edges + 1, size=(E, T // 5 + 1, N)).repeat(5, axis=1)[:, :T]
        use_block = rng.random((E, 1, N)) < 0.3
        return np.where(use_block, block, acts).astype(np.int64)
    raise ValueError(policy)


def _run_sim(scenario, seed: int, policy: str):
    sim = MECBatch(scenario, n_episodes=N_EPISODES)
    sim.reset(seed=seed)
    E, T, N, M = N_EPISODES, scenario.n_time, scenario.n_devices, scenario.n_edges
    rng = np.random.default_rng([seed, POLICIES.index(policy)])
    actions = _policy_actions(policy, rng, (E, T, N), M)
    active = np.zeros((E, T, M), dtype=np.int64)
    while not sim.done:
        t = sim.t
        sim.step(actions[:, t])
        active[:, t] = sim.m_active
    return sim, actions, active


def _run_ref(scenario, sim: MECBatch, e: int, actions: np.ndarray) -> dict:
    return run_reference(
        sim.task_size[e],
        actions[e],
        n_edges=scenario.n_edges,
        slot_s=scenario.slot_s,
        local_ghz=scenario.local_ghz,
        edge_ghz=scenario.edge_ghz_array(),
        rate_mbps=scenario.rate_mbps,
        density=sim.density[e],
        deadline_slots=scenario.deadline_slots,
    )


def _first_difference(name: str, has: np.ndarray, got: np.ndarray, want: np.ndarray) -> str:
    bad = np.argwhere(has & (got != want))
    t, n = bad[0]
    first = f"first at slot {t}, MD {n}: sim {got[t, n]}, ref {want[t, n]}"
    return f"{name}: {len(bad)} tasks differ; {first}"


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_vectorised_matches_reference(name: str, policy: str) -> None:
    overrides = dict(SCENARIOS[name])
    scenario = load_scenario(overrides.pop("preset", "tang2020"), **overrides)
    for seed in SEEDS:
        sim, actions, active = _run_sim(scenario, seed, policy)
        for e in range(N_EPISODES):
            ref = _run_ref(scenario, sim, e, actions)
            has = sim.task_size[e] > 0
            where = f"{name}/{policy} seed {seed} episode {e}"
            assert has.sum() > 0, where
            assert np.all(np.isnan(sim.task_delay[e][~has])), where
            assert np.array_equal(sim.task_delay[e][has], ref["delay"][has]), (
                f"{where}: " + _first_difference("delay", has, sim.task_delay[e], ref["delay"])
            )
            assert np.array_equal(sim.task_dropped[e], ref["dropped"]), (
                f"{where}: "
                + _first_difference("dropped", has, sim.task_dropped[e], ref["dropped"])
            )
            got_slot = sim.task_done_slot[e]
            assert np.array_equal(got_slot[has], ref["resolved_slot"][has]), (
                f"{where}: "
                + _first_difference("resolved slot", has, got_slot, ref["resolved_slot"])
            )
            assert np.array_equal(active[e], ref["active"]), f"{where}: active queues per EN"


def test_summary_metrics_match_reference() -> None:
    scenario = load_scenario("tang2020", n_slots=40)
    sim, actions, _ = _run_sim(scenario, 7, "random")
    refs = [_run_ref(scenario, sim, e, actions) for e in range(N_EPISODES)]
    has = sim.task_size > 0
    metrics = sim.metrics()
    dropped = np.stack([r["dropped"] for r in refs])[has]
    delay = np.stack([r["delay"] for r in refs])[has]
    assert metrics["tasks"] == sum(r["tasks"] for r in refs)
    assert metrics["drop_ratio"] == pytest.approx(dropped.mean(), abs=1e-12)
    assert metrics["delay"] == pytest.approx(delay.mean(), abs=1e-12)


def test_injected_arrivals_match_reference() -> None:
    """Arrivals given to ``reset(sizes=...)`` (off the 0.1 grid, as fog_env's train.py draws)."""
    scenario = load_scenario("tang2020", n_devices=12, n_edges=3, n_slots=30)
    E, T, N, M = 2, scenario.n_time, 12, 3
    rng = np.random.default_rng(11)
    sizes = rng.uniform(2.0, 5.0, size=(E, T, N)) * (rng.random((E, T, N)) < 0.4)
    sizes[:, scenario.n_slots :] = 0.0
    actions = rng.integers(0, M + 1, size=(E, T, N))
    sim = MECBatch(scenario, n_episodes=E)
    sim.reset(seed=3, sizes=sizes)
    while not sim.done:
        sim.step(actions[:, sim.t])
    for e in range(E):
        ref = _run_ref(scenario, sim, e, actions)
        has = sizes[e] > 0
        assert np.array_equal(sim.task_delay[e][has], ref["delay"][has])
        assert np.array_equal(sim.task_dropped[e], ref["dropped"])


# ---- the reference itself, on cases small enough to compute by hand -------------------------
# tang2020 numbers: local 2.5·0.1/0.297 = 0.8418 Mbit/slot, uplink 1.4 Mbit/slot,
# EN 41.8·0.1/0.297 = 14.07 Mbit/slot (shared).
TANG = dict(slot_s=0.1, local_ghz=2.5, rate_mbps=14.0, density=0.297)


def _episode(n_time: int, n_devices: int, tasks: dict) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.zeros((n_time, n_devices))
    actions = np.zeros((n_time, n_devices), dtype=np.int64)
    for (t, n), (size, action) in tasks.items():
        sizes[t, n], actions[t, n] = size, action
    return sizes, actions


def test_reference_local_fifo_and_deadline() -> None:
    # 4.9 Mbit needs 6 local slots: done in slot 5. The next task (arrived in slot 1) starts in
    # slot 6, would finish in slot 11 (age 11) and is dropped at age 10, in slot 10.
    sizes, actions = _episode(20, 1, {(0, 0): (4.9, 0), (1, 0): (4.9, 0), (3, 0): (2.0, 0)})
    r = run_reference(sizes, actions, n_edges=1, edge_ghz=41.8, deadline_slots=10, **TANG)
    assert r["delay"][0, 0] == 6 and r["completed_slot"][0, 0] == 5 and not r["dropped"][0, 0]
    assert r["delay"][1, 0] == 10 and r["dropped"][1, 0] and r["resolved_slot"][1, 0] == 10
    # 2.0 Mbit: starts in slot 11 (age 9), 3 slots needed, dropped at age 10 in slot 12
    assert r["dropped"][3, 0] and r["resolved_slot"][3, 0] == 12
    assert r["tasks"] == 3 and r["drop_ratio"] == pytest.approx(2 / 3)
    assert r["delay_mean"] == pytest.approx((6 + 10 + 10) / 3)
    assert np.isnan(r["delay"][2, 0])


def test_reference_offload_and_edge_sharing() -> None:
    # EN speed 2.97·0.1/0.297 = 1 Mbit/slot. MD 1 sends 1.3 Mbit (joins the EN in slot 0),
    # MD 0 sends 1.9 Mbit (joins in slot 1). Slot 1: MD 1 alone (m = 1) gets 1.0 -> 0.3 left.
    # Slot 2: m = 2, 0.5 each: MD 1 done (delay 3), MD 0 has 1.4 left. Slot 3: m = 1 -> 0.4.
    # Slot 4: done (delay 5). Without sharing MD 0 would finish in slot 3.
    sizes, actions = _episode(10, 2, {(0, 0): (1.9, 1), (0, 1): (1.3, 1)})
    r = run_reference(sizes, actions, n_edges=1, edge_ghz=2.97, deadline_slots=10, **TANG)
    assert r["delay"][0, 1] == 3 and r["completed_slot"][0, 1] == 2
    assert r["delay"][0, 0] == 5 and r["completed_slot"][0, 0] == 4
    assert r["active"][:6, 0].tolist() == [1, 2, 1, 1, 0, 0]
    assert not r["dropped"].any()


def test_reference_expired_in_edge_queue_counts_as_active() -> None:
    # D = 3. 4.0 Mbit at 1.4 Mbit/slot is sent in slots 0-2 (age 3 = D, so it is not dropped
    # on the uplink) and joins EN 2; in slot 3 it is popped at age 4 > D and dropped. At the end
    # of slot 2 the EN-2 queue holds it, so it counts as active there.
    sizes, actions = _episode(8, 1, {(0, 0): (4.0, 2)})
    r = run_reference(sizes, actions, n_edges=2, edge_ghz=41.8, deadline_slots=3, **TANG)
    assert r["dropped"][0, 0] and r["delay"][0, 0] == 3 and r["resolved_slot"][0, 0] == 3
    assert r["active"][:5].tolist() == [[0, 0], [0, 0], [0, 1], [0, 0], [0, 0]]


def test_reference_uplink_deadline_and_leftovers() -> None:
    # D = 2: 4.0 Mbit cannot be sent in 2 slots -> dropped on the uplink in slot 1. A task that
    # arrives in the last slot is left over and dropped at the end with delay D.
    sizes, actions = _episode(4, 1, {(0, 0): (4.0, 1), (3, 0): (1.0, 0)})
    r = run_reference(sizes, actions, n_edges=1, edge_ghz=41.8, deadline_slots=2, **TANG)
    assert r["dropped"][0, 0] and r["resolved_slot"][0, 0] == 1
    # 1.0 Mbit locally: 0.158 left after slot 3, the episode ends -> dropped
    assert r["dropped"][3, 0] and r["delay"][3, 0] == 2 and r["resolved_slot"][3, 0] == 3


def test_edge_share_rounding_matches_reference() -> None:
    """The EN share must be computed as f_E·τ/density/m, in that order (as fog_env does).

    f_E·τ·(1/m)/density is 1 ulp off for some m and flips tasks that end exactly on a slot
    boundary (MECBatch did this once: delay 8 here instead of 7).
    """
    # f_E·τ/density = 19.7·0.1/0.197 = 10 Mbit/slot shared by m = 6 queues: 5.0 Mbit is exactly
    # 3 slots of service. Uplink: 4 slots (slots 0-3), EN: slots 4-6 -> delay 7 (fog_env: 7).
    N, M, D, T = 6, 2, 10, 12
    sizes, actions = _episode(T, N, {(0, n): (5.0, 1) for n in range(N)})
    scenario = load_scenario(
        "tang2020",
        n_devices=N,
        n_edges=M,
        n_slots=T - D,
        edge_ghz=[19.7],
        density_gcycles_per_mbit=[0.197],
    )
    sim = MECBatch(scenario, n_episodes=1)
    sim.reset(seed=0, sizes=sizes[None])
    while not sim.done:
        sim.step(actions[None, sim.t])
    ref = _run_ref(scenario, sim, 0, actions[None])
    assert ref["delay"][0].tolist() == [7.0] * N
    assert sim.task_delay[0, 0].tolist() == ref["delay"][0].tolist()

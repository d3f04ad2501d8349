"""Offloading policies for the MEC simulator: heuristics and the full-information oracle.

A policy is any callable ``policy(obs, sim) -> actions`` with ``actions`` an int array [E, N]
(``0`` = local, ``j`` = edge node ``j``). Heuristics other than the oracle use only what a
device observes (its own features and the public EN-load history) plus its own static
parameters (CPU speed, computation density); randomised ones draw from the simulator's
per-episode noise so that results do not depend on how episodes are batched.

The oracle sees the whole system. It assigns the slot's new tasks one device at a time; each
assignment sees the load that the tasks assigned before it add (so it does not herd devices onto
one node). For each action it predicts the task's delay, drop and device energy from the exact
FIFO state of the device's local and transmit queues and its queues at every EN, and picks the
action with the best predicted QoE reward. Its decisions are the hard labels for learning and
its predicted costs are recorded in datasets.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from common.mec import features as fl
from common.mec.sim import LQ, TXQ, TXRUN, MECBatch, Observation

Policy = Callable[[Observation, MECBatch], np.ndarray]


def all_local(obs: Observation, sim: MECBatch) -> np.ndarray:
    return np.zeros(obs.mask.shape, dtype=np.int64)


def all_offload(obs: Observation, sim: MECBatch) -> np.ndarray:
    """A uniformly random edge node for every task."""
    u = sim.noise[:, min(obs.t, sim.T - 1), :]
    return 1 + np.minimum((u * sim.M).astype(np.int64), sim.M - 1)


def random_policy(obs: Observation, sim: MECBatch) -> np.ndarray:
    """Uniform over local and the edge nodes."""
    u = sim.noise[:, min(obs.t, sim.T - 1), :]
    return np.minimum((u * sim.n_actions).astype(np.int64), sim.M)


def _edge_rate_observed(obs: Observation, sim: MECBatch) -> np.ndarray:
    """Mbit/slot a new queue would get at each EN, from the last observed load [E, N, M]."""
    m_last = obs.history[:, -1, :].astype(np.float64)  # [E, M]
    t = min(obs.t, sim.T - 1)
    gc = sim.edge_gc[t][None, None, :] / (m_last[:, None, :] + 1.0)
    return gc / sim.density[:, :, None]


def greedy(obs: Observation, sim: MECBatch) -> np.ndarray:
    """Least estimated completion time, from the device's own observation."""
    f = obs.features.astype(np.float64)
    size = f[:, :, fl.TASK_MBIT]
    local = f[:, :, fl.LOCAL_WAIT] + size / sim.local_mbit
    backlog = f[:, :, fl.edge_block("backlog_mbit", sim.M)]
    tx = f[:, :, fl.TX_WAIT] + size / sim.nominal_tx_mbit[None, :]
    edge = tx[:, :, None] + 1.0 + (backlog + size[:, :, None]) / _edge_rate_observed(obs, sim)
    times = np.concatenate([local[:, :, None], edge], axis=2)
    return np.argmin(times, axis=2)


def load_balance(obs: Observation, sim: MECBatch) -> np.ndarray:
    """DDLRO-style dynamic load balancing from what the ENs broadcast: each device compares two
    edge nodes drawn at random ("power of two choices") by their capacity and workload (its own
    backlog there, the queues sharing the node, the node's free CPU) and offloads to the better
    one unless its own CPU would finish sooner.

    Every device sees the same broadcast, so "the least-loaded node" alone sends all of a slot's
    tasks to one node; two random candidates per device spread them while still steering away
    from busy nodes.
    """
    M = sim.M
    f = obs.features.astype(np.float64)
    size = f[:, :, fl.TASK_MBIT]
    local = f[:, :, fl.LOCAL_WAIT] + size / sim.local_mbit
    tx = f[:, :, fl.TX_WAIT] + size / sim.nominal_tx_mbit[None, :]
    work = f[:, :, fl.edge_block("backlog_mbit", M)] + size[:, :, None]  # Mbit, own queue
    share = f[:, :, fl.edge_block("edge_queues", M)] + 1.0
    speed = f[:, :, fl.edge_block("edge_ghz", M)] * sim.tau / sim.density[:, :, None]  # Mbit/slot
    edge = tx[:, :, None] + 1.0 + work * share / np.maximum(speed, 1e-9)  # [E, N, M] slots
    # two distinct candidates from the device's one uniform draw of this slot
    u = sim.noise[:, min(obs.t, sim.T - 1), :] * M
    first = np.minimum(u.astype(np.int64), M - 1)
    second = np.minimum(((u - first) * (M - 1)).astype(np.int64), max(M - 2, 0))
    second += (second >= first) & (M > 1)
    t1 = np.take_along_axis(edge, first[:, :, None], 2)[:, :, 0]
    t2 = np.take_along_axis(edge, second[:, :, None], 2)[:, :, 0]
    best, t_best = np.where(t2 < t1, second, first), np.minimum(t1, t2)
    return np.where(t_best < local, 1 + best, 0)


# ---- oracle -----------------------------------------------------------------------------------


def _fifo_free_slot(sim: MECBatch, t: int, run_a, run_rem, status: int, per_slot) -> np.ndarray:
    """Last slot in which a FIFO processor is busy with the work already in it [E, N].

    ``run_a``/``run_rem``: task in service (-1 if idle) and its remaining Mbit;
    ``per_slot`` [E, N] Mbit served per slot. Replays the reference rules exactly: one task per
    slot, a task is dropped when its age reaches the deadline, expired tasks are skipped.
    """
    D = sim.D
    busy = run_a >= 0
    end = np.where(
        busy,
        np.minimum(t + np.ceil(run_rem / per_slot) - 1, run_a + D - 1),
        t - 1,
    )
    for a in range(max(0, t - D), t):
        queued = sim.task_status[:, a, :] == status
        if not queued.any():
            continue
        start = end + 1
        dur = np.ceil(sim.task_size[:, a, :] / per_slot)
        fin = np.maximum(start - 1, np.minimum(start + dur - 1, a + D - 1))
        end = np.where(queued, fin, end)
    return end


def _tx_replay(sim: MECBatch, t: int, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replay each device's transmit FIFO, with a new task of ``size`` appended, over the next
    D slots using the episode's actual per-slot rates (the channel realisation is known to the
    offline oracle). Returns the slot in which the new task's transmission completes (``inf``
    if it is dropped first) and the transmit time it uses, in slots [E, N].
    """
    E, N, D, T = sim.E, sim.N, sim.D, sim.T
    win = np.arange(max(0, t - D), t)
    queued = sim.task_status[:, win, :] == TXQ  # [E, W, N], in arrival order
    q_size = np.concatenate([np.where(queued, sim.task_size[:, win, :], 0.0), size[:, None]], 1)
    q_arr = np.concatenate([np.broadcast_to(win[None, :, None], queued.shape),
                            np.full((E, 1, N), t)], 1).astype(np.float64)  # fmt: skip
    q_ok = np.concatenate([queued, (size > 0)[:, None]], 1)
    L = q_size.shape[1]
    rank = np.cumsum(q_ok, 1) - 1  # position of each real entry in the queue
    n_q = q_ok.sum(1)  # [E, N]
    order = np.argsort(~q_ok, axis=1, kind="stable")  # real entries first, in arrival order
    q_size = np.take_along_axis(q_size, order, 1)
    q_arr = np.take_along_axis(q_arr, order, 1)
    del rank
    cur_rem = np.where(sim.tx_a >= 0, sim.tx_rem, 0.0)
    cur_arr = np.where(sim.tx_a >= 0, sim.tx_a, 0).astype(np.float64)
    cur_idx = np.where(sim.tx_a >= 0, -1, -2)  # -1: a task already in service, -2: idle
    ptr = np.zeros((E, N), dtype=np.int64)
    new_idx = n_q - 1
    fin = np.full((E, N), np.inf)
    used = np.zeros((E, N))
    ee, nn = np.meshgrid(np.arange(E), np.arange(N), indexing="ij")
    for s in range(t, min(t + D, T)):
        idle = (cur_idx == -2) & (ptr < n_q)
        if idle.any():
            k = np.minimum(ptr, L - 1)
            cur_rem = np.where(idle, q_size[ee, k, nn], cur_rem)
            cur_arr = np.where(idle, q_arr[ee, k, nn], cur_arr)
            cur_idx = np.where(idle, ptr, cur_idx)
            ptr = ptr + idle
        busy = cur_idx != -2
        if sim.sc.channel == "fixed":
            cap = np.broadcast_to(sim.nominal_tx_mbit[None, :], (E, N))
        else:
            h = sim.fading[:, s, :]
            cap = np.maximum(sim.sc.bandwidth_mhz * np.log2(1 + sim.snr[None, :] * h) * sim.tau,
                             1e-9)  # fmt: skip
        mine = busy & (cur_idx == new_idx)
        used += np.where(mine, np.minimum(cur_rem, cap) / cap, 0.0)
        cur_rem = np.where(busy, cur_rem - cap, cur_rem)
        done = busy & (cur_rem <= 0)
        fin = np.where(mine & done, s, fin)
        dropped = busy & ~done & (s - cur_arr + 1 >= D)
        cur_idx = np.where(done | dropped, -2, cur_idx)
    return fin, used


class Oracle:
    """Full-information per-task QoE maximiser (see the module docstring)."""

    def __init__(self) -> None:
        self._memo: tuple[int, int, tuple[np.ndarray, np.ndarray]] | None = None

    def __call__(self, obs: Observation, sim: MECBatch) -> np.ndarray:
        return self.decide(obs, sim)[0]

    def decide(self, obs: Observation, sim: MECBatch) -> tuple[np.ndarray, np.ndarray]:
        """Actions [E, N] and predicted cost (= −reward) of every action [E, N, M + 1].

        The last answer is memoised per (episode batch, slot): a behaviour policy that consults
        the oracle and the dataset recorder that labels with it share one call.
        """
        key = (sim.episode_uid, obs.t)
        if self._memo is not None and self._memo[:2] == key:
            return self._memo[2]
        result = self._decide(obs, sim)
        self._memo = (*key, result)
        return result

    def _decide(self, obs: Observation, sim: MECBatch) -> tuple[np.ndarray, np.ndarray]:
        E, N, M, D, t = sim.E, sim.N, sim.M, sim.D, obs.t
        sc = sim.sc
        size = sim.task_size[:, t, :]
        mask = obs.mask
        costs = np.zeros((E, N, M + 1))
        actions = np.zeros((E, N), dtype=np.int64)
        if not mask.any():
            return actions, costs
        alpha = sim.alpha
        md_energy = sc.energy != "none"

        def qoe_cost(alpha_n, delay, drop, energy):
            e = energy if md_energy else 0.0
            c = 2.0 * (alpha_n * np.where(drop, D, delay) + (1 - alpha_n) * sc.energy_scale * e)
            return c - np.where(drop, 0.0, sc.r_base)

        # Local: exact FIFO replay of the device's own queue.
        cap_l = sim.local_mbit
        l_end = _fifo_free_slot(sim, t, sim.lp_a, sim.lp_rem, LQ, cap_l)
        l_fin = l_end + np.ceil(size / cap_l)
        l_delay = l_fin - t + 1
        l_drop = l_delay > D
        served = np.minimum(size, np.maximum(0, t + D - 1 - l_end) * cap_l)
        if sc.energy == "dvfs":
            l_energy = sc.kappa * (sc.local_ghz * 1e9) ** 2 * served * sim.density * 1e9
        else:
            l_energy = sc.p_comp_w * served / (sc.local_ghz / sim.density)

        # Transmit: replay of the device's transmit FIFO with the actual channel.
        t_fin, tx_slots = _tx_replay(sim, t, size)
        t_drop = ~np.isfinite(t_fin)
        t_fin = np.where(t_drop, t + D, t_fin)
        tx_energy = sc.p_tx_w * sim.tau * tx_slots

        # Work ahead of a new task at each EN: in service, queued there, and still in transmit.
        win = np.arange(max(0, t - D), t)
        st = sim.task_status[:, win, :]
        act = sim.task_action[:, win, :].astype(np.int64)
        in_tx = (st == TXQ) | (st == TXRUN)
        ahead = np.zeros((E, N, M))
        for j in range(M):
            ahead[:, :, j] = (sim.task_size[:, win, :] * (in_tx & (act == j + 1))).sum(1)
        # queues that are active, or will be once their transmissions land, share each EN
        counted = (sim.ep_a >= 0) | (sim.eq_cnt > 0) | (ahead > 0)
        ahead += np.maximum(sim.ep_rem, 0) + sim.eq_mbit
        m_now = counted.sum(1).astype(np.float64)  # [E, M]
        extra = np.zeros((E, M))
        gc = sim.edge_gc[t]  # [M]
        free_ghz = sim.edge_ghz * (1.0 - sim.cpu_bg[t])
        if sim.edge_mem is not None:
            mem_free = sim.edge_mem[None, :] * (1.0 - sim.mem_bg[t])[None, :] - sim.mem_used

        for n in np.nonzero(mask.any(0))[0]:
            has = mask[:, n]
            s = size[:, n]
            dens = sim.density[:, n]
            m_new = m_now + extra + (~counted[:, n, :])
            rate = gc[None, :] / (dens[:, None] * m_new)  # Mbit per slot [E, M]
            start = np.maximum(t_fin[:, n, None] + 1, t + np.ceil(ahead[:, n, :] / rate))
            fin = start + np.ceil(s[:, None] / rate) - 1
            delay = fin - t + 1
            fail = np.zeros((E, M), dtype=bool)
            if sc.cpu_fail_margin > 0:
                need = s * dens / (D * sim.tau)
                fail |= free_ghz[None, :] < sc.cpu_fail_margin * need[:, None]
            if sim.edge_mem is not None:
                fail |= mem_free < sim.task_mem[:, t, n][:, None]
            drop = (delay > D) | t_drop[:, n, None] | fail
            idle = sc.p_idle_w * sim.tau * np.clip(fin - t_fin[:, n, None], 0, D)
            e_off = tx_energy[:, n, None] + np.where(t_drop[:, n, None], 0.0, idle)
            c_off = qoe_cost(alpha[:, n, None], delay, drop, e_off)
            c_loc = qoe_cost(alpha[:, n], l_delay[:, n], l_drop[:, n], l_energy[:, n])
            c = np.concatenate([c_loc[:, None], c_off], axis=1)
            choice = np.argmin(c, axis=1)
            choice = np.where(has, choice, 0)
            costs[:, n, :] = np.where(has[:, None], c, 0.0)
            actions[:, n] = choice
            off = choice > 0
            if off.any():
                e_idx = np.nonzero(off)[0]
                j = choice[off] - 1
                extra[e_idx, j] += ~counted[e_idx, n, j]
                if sim.edge_mem is not None:
                    mem_free[e_idx, j] -= sim.task_mem[e_idx, t, n]
        return actions, costs


oracle = Oracle()

POLICIES: dict[str, Policy] = {
    "all_local": all_local,
    "all_offload": all_offload,
    "random": random_policy,
    "greedy": greedy,
    "load_balance": load_balance,
    "oracle": oracle,
}
HEURISTICS = ("all_local", "all_offload", "random", "greedy", "load_balance")


def make_policy(name: str) -> Policy:
    """Look up a policy by name; unknown names fail with the list of valid ones."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; valid policies are {sorted(POLICIES)}")
    return POLICIES[name]


HEURISTIC_METHODS = ("all_local", "all_offload", "random", "greedy", "load_balance", "oracle")
"""The policies a study or a proxy set may name as methods: the public heuristics and the oracle."""

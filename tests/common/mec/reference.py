"""Scalar reference implementation of the MEC queue semantics: the test oracle.

``common.mec.MECBatch`` is fast because it is vectorised over episodes, devices and edge nodes,
which also makes it hard to read. This module is the opposite: one episode, plain Python objects
(``deque`` FIFOs, one ``_Server`` per queue, explicit loops over devices and edge nodes), written
directly from the specification below so that it can be checked by eye. Tests feed both
simulators the same arrivals and actions and require the per-task results to be *exactly*
equal. It is not used at run time.

The specification (DESIGN §3, the semantics of the public Tang & Wong 2020 ``fog_env``):

* Slots ``t = 0 .. n_time - 1``. A task that arrives in slot ``a`` has age ``t - a + 1`` in slot
  ``t``; ``D = deadline_slots``. Each MD gets at most one task per slot (``sizes[t, n] > 0``).
* Action per task: ``0`` = local, ``j >= 1`` = edge node ``j``.
* Every slot runs these stages in this order:

  1. **Local**, for every MD: today's local task joins the MD's FIFO local queue. An idle
     processor pops the head, dropping (delay ``D``) every popped task whose age exceeds ``D``,
     and starts the first one that has not expired. The task in service loses
     ``f_L·τ/density`` Mbit. If nothing remains it is completed with delay = its age; otherwise,
     if its age is ``D``, it is dropped. At most one task is served per slot: capacity left over
     after a completion is wasted.
  2. **Edge**, for every (MD, EN ``j``) queue, the same with ``f_E·τ/density/m_j`` Mbit per
     slot, where ``m_j`` is the number of (MD, EN ``j``) queues that were *active* at the end of
     the previous slot (a task in service, or a non-empty queue even if everything in it has
     already expired).
  3. **Transmit**, for every MD: today's offloaded task joins the MD's FIFO transmit queue; the
     same pop rule; the task in service loses ``R·τ`` Mbit. When nothing remains it joins the
     MD's own queue at its EN (served there from the next slot on); otherwise, at age ``D``, it
     is dropped.
  4. The active counts ``m_j`` for the next slot are taken.

* Tasks still in the system after the last slot are dropped. Every dropped task counts with
  delay ``D``. ``drop_ratio`` = dropped / arrived; ``delay`` = mean delay over arrived tasks.

Floating point: the per-slot amounts are computed exactly as written above, left to right
(``local_ghz * slot_s / density``, ``edge_ghz * slot_s / density / m``, ``rate_mbps * slot_s``),
and a task's remaining size is decreased by repeated subtraction, as ``fog_env`` does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LOCAL = 0


@dataclass
class _Task:
    device: int
    arrival: int  # slot a
    size: float  # Mbit
    target: int  # 0 = local, j >= 1 = edge node j
    remaining: float  # Mbit still to process (or to transmit)


class _Server:
    """A FIFO queue in front of one processor that serves one task at a time."""

    def __init__(self) -> None:
        self.queue: deque[_Task] = deque()
        self.current: _Task | None = None

    def is_active(self) -> bool:
        """A task in service, or anything waiting (expired tasks included)."""
        return self.current is not None or len(self.queue) > 0


class _Recorder:
    """Per-task outcomes of one episode."""

    def __init__(self, n_time: int, n_devices: int, deadline: int) -> None:
        self.deadline = deadline
        self.delay = np.full((n_time, n_devices), np.nan)
        self.dropped = np.zeros((n_time, n_devices), dtype=bool)
        self.completed_slot = np.full((n_time, n_devices), -1, dtype=np.int64)
        self.resolved_slot = np.full((n_time, n_devices), -1, dtype=np.int64)

    def is_resolved(self, task: _Task) -> bool:
        return self.resolved_slot[task.arrival, task.device] >= 0

    def complete(self, task: _Task, t: int) -> None:
        assert not self.is_resolved(task), "task resolved twice"
        self.delay[task.arrival, task.device] = t - task.arrival + 1
        self.completed_slot[task.arrival, task.device] = t
        self.resolved_slot[task.arrival, task.device] = t

    def drop(self, task: _Task, t: int) -> None:
        assert not self.is_resolved(task), "task resolved twice"
        self.delay[task.arrival, task.device] = self.deadline
        self.dropped[task.arrival, task.device] = True
        self.resolved_slot[task.arrival, task.device] = t


def _age(task: _Task, t: int) -> int:
    return t - task.arrival + 1


def _serve(server: _Server, t: int, amount, deadline: int, rec: _Recorder) -> _Task | None:
    """One slot of one server. ``amount(task)`` is the Mbit it can serve this slot.

    Returns the task whose remaining size reached zero in this slot (or ``None``). The caller
    decides what finishing means (completed, or handed over to an edge node). Drops are recorded
    here.
    """
    if server.current is None:
        while server.queue:
            task = server.queue.popleft()
            if _age(task, t) > deadline:
                rec.drop(task, t)  # expired while waiting
            else:
                server.current = task
                break
    task = server.current
    if task is None:
        return None
    task.remaining = task.remaining - amount(task)
    if task.remaining <= 0:
        server.current = None
        return task
    if _age(task, t) == deadline:
        server.current = None
        rec.drop(task, t)
    return None


def _per_edge(value: float | Sequence[float], n_edges: int) -> list[float]:
    if np.ndim(value) == 0:
        return [float(value)] * n_edges
    values = [float(v) for v in value]
    if len(values) != n_edges:
        raise ValueError(f"edge_ghz needs {n_edges} values, got {len(values)}")
    return values


def _per_device(value: float | Sequence[float], n_devices: int) -> list[float]:
    if np.ndim(value) == 0:
        return [float(value)] * n_devices
    values = [float(v) for v in value]
    if len(values) != n_devices:
        raise ValueError(f"density needs {n_devices} values, got {len(values)}")
    return values


def run_reference(
    sizes: np.ndarray,
    actions: np.ndarray,
    *,
    n_edges: int,
    slot_s: float,
    local_ghz: float,
    edge_ghz: float | Sequence[float],
    rate_mbps: float,
    density: float | Sequence[float],
    deadline_slots: int,
) -> dict:
    """Simulate one episode with the given arrivals and actions.

    ``sizes`` [n_time, N]: task size in Mbit arriving at MD ``n`` in slot ``t`` (0 = no task).
    ``actions`` [n_time, N]: 0 = local, j = edge node j (ignored where there is no task).
    ``edge_ghz`` is one value or one per EN; ``density`` (Gcycles/Mbit) one value or one per MD.

    Returns per-task arrays [n_time, N] (entries without a task: ``nan`` / ``False`` / ``-1``):
    ``delay`` (slots; ``D`` if dropped), ``dropped``, ``completed_slot`` (slot of completion,
    -1 if dropped), ``resolved_slot`` (slot in which the task was completed or dropped; expired
    waiting tasks are dropped when their queue reaches them, leftovers in the last slot);
    ``active`` [n_time, M]: the number of active (MD, EN j) queues at the end of each slot; and
    the summary ``tasks`` (number arrived), ``drop_ratio`` and ``delay_mean`` (mean delay over
    arrived tasks; named so as not to clash with the per-task ``delay`` array).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    actions = np.asarray(actions)
    if sizes.ndim != 2 or actions.shape != sizes.shape:
        raise ValueError(
            f"sizes and actions must be [n_time, N]; got {sizes.shape}, {actions.shape}"
        )
    n_time, n_devices = sizes.shape
    deadline = int(deadline_slots)
    edge_speed = _per_edge(edge_ghz, n_edges)
    dens = _per_device(density, n_devices)
    for t in range(n_time):
        for n in range(n_devices):
            if sizes[t, n] > 0 and not 0 <= int(actions[t, n]) <= n_edges:
                raise ValueError(f"action {actions[t, n]} at slot {t}, MD {n} not in 0..{n_edges}")

    local_mbit = [local_ghz * slot_s / dens[n] for n in range(n_devices)]
    tx_mbit = rate_mbps * slot_s

    local = [_Server() for _ in range(n_devices)]
    transmit = [_Server() for _ in range(n_devices)]
    # edge[n][j - 1]: MD n's queue at edge node j
    edge = [[_Server() for _ in range(n_edges)] for _ in range(n_devices)]
    m_active = [0] * n_edges  # active queues per EN at the end of the previous slot
    active_log = np.zeros((n_time, n_edges), dtype=np.int64)
    rec = _Recorder(n_time, n_devices, deadline)

    def new_task(t: int, n: int) -> _Task | None:
        if sizes[t, n] <= 0:
            return None
        size = float(sizes[t, n])
        return _Task(device=n, arrival=t, size=size, target=int(actions[t, n]), remaining=size)

    for t in range(n_time):
        arrivals = [new_task(t, n) for n in range(n_devices)]

        # (1) local stage
        for n in range(n_devices):
            task = arrivals[n]
            if task is not None and task.target == LOCAL:
                local[n].queue.append(task)
            done = _serve(local[n], t, lambda task: local_mbit[task.device], deadline, rec)
            if done is not None:
                rec.complete(done, t)

        # (2) edge stage
        for n in range(n_devices):
            for j in range(1, n_edges + 1):

                def edge_amount(task: _Task, j: int = j) -> float:
                    m = m_active[j - 1]
                    assert m >= 1, "a task in service at an EN implies an active queue"
                    return edge_speed[j - 1] * slot_s / dens[task.device] / m

                done = _serve(edge[n][j - 1], t, edge_amount, deadline, rec)
                if done is not None:
                    rec.complete(done, t)

        # (3) transmit stage
        for n in range(n_devices):
            task = arrivals[n]
            if task is not None and task.target != LOCAL:
                transmit[n].queue.append(task)
            sent = _serve(transmit[n], t, lambda task: tx_mbit, deadline, rec)
            if sent is not None:
                sent.remaining = sent.size  # now to be computed at the EN
                edge[n][sent.target - 1].queue.append(sent)

        # (4) active queues per EN, used in the next slot
        for j in range(1, n_edges + 1):
            m_active[j - 1] = sum(1 for n in range(n_devices) if edge[n][j - 1].is_active())
            active_log[t, j - 1] = m_active[j - 1]

    # end of the episode: whatever is left is dropped
    leftovers: list[_Task] = []
    for n in range(n_devices):
        servers = [local[n], transmit[n], *edge[n]]
        for server in servers:
            if server.current is not None:
                leftovers.append(server.current)
            leftovers.extend(server.queue)
    for task in leftovers:
        rec.drop(task, n_time - 1)

    arrived = sizes > 0
    assert np.all(rec.resolved_slot[arrived] >= 0), "every arrived task must be resolved"
    n_tasks = int(arrived.sum())
    return {
        "delay": rec.delay,
        "dropped": rec.dropped,
        "completed_slot": rec.completed_slot,
        "resolved_slot": rec.resolved_slot,
        "active": active_log,
        "tasks": n_tasks,
        "drop_ratio": float(rec.dropped[arrived].mean()) if n_tasks else float("nan"),
        "delay_mean": float(rec.delay[arrived].mean()) if n_tasks else float("nan"),
    }

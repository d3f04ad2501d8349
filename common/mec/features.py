"""What one device observes when a task arrives: the feature layout, its units and its scale.

A row of features has six scalar fields of the device and its task, then five blocks of ``M``
columns, one column per edge node (EN) in each block:

==============  =====================  ============  =========================================
columns         field                  unit          meaning
==============  =====================  ============  =========================================
0               ``task_mbit``          Mbit          size of the task that just arrived
1               ``density``            Gcycles/Mbit  the task's computation density
2               ``task_mem_gb``        GB            memory the task needs at an EN (or 0)
3               ``local_wait``         slots         work ahead in the local queue
4               ``tx_wait``            slots         bits ahead in the transmit queue
5               ``alpha``              —             power mode α (delay weight in the QoE)
6 .. 6+M        ``backlog_mbit``       Mbit          this device's unfinished bits at EN j
6+M .. 6+2M     ``edge_load_mbit``     Mbit          all bits at EN j or being sent to it
6+2M .. 6+3M    ``edge_queues``        queues        devices with work at or sent to EN j
6+3M .. 6+4M    ``edge_ghz``           GHz           EN j's CPU left by background pressure
6+4M .. 6+5M    ``edge_mem_free_gb``   GB            EN j's free memory (0: no memory model)
==============  =====================  ============  =========================================

``local_wait`` is the work ahead over the local speed, ``tx_wait`` the bits ahead over the
nominal uplink rate. The first six fields and ``backlog_mbit`` are the device's own; the other
four blocks are what an EN can broadcast every slot (its queues, the transfers it is
receiving, its free CPU and memory). Devices never see another device's private state or the
future channel.

Every EN block is a column per EN in the same order, so relabelling the ENs is one column
permutation applied to every block, to the load history and to the actions
(:func:`permute_edges`): the students' training uses it so that no EN index is favoured.
"""

from __future__ import annotations

import numpy as np

SCALAR_FIELDS = ("task_mbit", "density", "task_mem_gb", "local_wait", "tx_wait", "alpha")
"""Per-device fields, one column each, in column order."""
EDGE_FIELDS = ("backlog_mbit", "edge_load_mbit", "edge_queues", "edge_ghz", "edge_mem_free_gb")
"""Per-EN fields, one block of ``M`` columns each, in column order."""
PUBLIC_EDGE_FIELDS = EDGE_FIELDS[1:]
"""The blocks an EN broadcasts (the rest of the row is the device's own)."""

TASK_MBIT, DENSITY, TASK_MEM_GB, LOCAL_WAIT, TX_WAIT, ALPHA = range(len(SCALAR_FIELDS))


def n_features(n_edges: int) -> int:
    """Length of a feature row for ``n_edges`` ENs."""
    return len(SCALAR_FIELDS) + len(EDGE_FIELDS) * n_edges


def edge_block(name: str, n_edges: int) -> slice:
    """The columns of per-EN field ``name`` (one of :data:`EDGE_FIELDS`)."""
    start = len(SCALAR_FIELDS) + EDGE_FIELDS.index(name) * n_edges
    return slice(start, start + n_edges)


def column_names(n_edges: int) -> list[str]:
    """A name per column, e.g. ``backlog_mbit[2]`` for EN 2's column of that block (1-based)."""
    names = list(SCALAR_FIELDS)
    for field in EDGE_FIELDS:
        names += [f"{field}[{j + 1}]" for j in range(n_edges)]
    return names


def edge_permutation_index(perm: np.ndarray) -> np.ndarray:
    """Column index that applies EN permutation(s) ``perm`` ([M] or [B, M]) to feature rows.

    ``features[..., idx]`` (with a per-row ``idx`` for [B, M]) puts old EN ``perm[i]`` at new
    position ``i`` in every EN block; the scalar fields stay in place.
    """
    perm = np.asarray(perm)
    m = perm.shape[-1]
    head = np.broadcast_to(np.arange(len(SCALAR_FIELDS)), (*perm.shape[:-1], len(SCALAR_FIELDS)))
    blocks = [len(SCALAR_FIELDS) + b * m + perm for b in range(len(EDGE_FIELDS))]
    return np.concatenate([head, *blocks], axis=-1)


def permute_edges(
    features: np.ndarray, history: np.ndarray, perm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Relabel the ENs of feature rows [B, F] and histories [B, K, M] by permutations [B, M].

    New EN ``i`` of row ``b`` is old EN ``perm[b, i]``; an action vector over ``0..M`` is
    permuted the same way with :func:`permute_actions`.
    """
    idx = edge_permutation_index(perm)
    f = np.take_along_axis(features, idx, axis=1)
    h = np.take_along_axis(history, perm[:, None, :], axis=2)
    return f, h


def permute_actions(values: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Per-action values [B, M + 1] (action 0 = local stays) under EN permutations [B, M]."""
    idx = np.concatenate([np.zeros((len(perm), 1), dtype=perm.dtype), perm + 1], axis=1)
    return np.take_along_axis(values, idx, axis=1)


def feature_scale(scenario) -> tuple[np.ndarray, float]:
    """Divisors that bring every column of a ``scenario``'s feature rows to O(1), and the
    divisor of the load history (queues per EN). Networks see ``features / scale``."""
    m, n = scenario.n_edges, scenario.n_devices
    per_edge = float(max(1, n // max(1, m)))  # devices an EN serves on average
    scale = np.ones(n_features(m), dtype=np.float32)
    scale[TASK_MBIT] = scenario.task_mbit_max
    scale[DENSITY] = max(scenario.density_gcycles_per_mbit)
    scale[TASK_MEM_GB] = scenario.task_mem_gb_max if scenario.task_mem_gb_max > 0 else 1.0
    scale[LOCAL_WAIT] = scale[TX_WAIT] = float(scenario.deadline_slots)
    scale[edge_block("backlog_mbit", m)] = scenario.task_mbit_max * 2.0
    scale[edge_block("edge_load_mbit", m)] = scenario.task_mbit_max * per_edge
    scale[edge_block("edge_queues", m)] = per_edge
    scale[edge_block("edge_ghz", m)] = max(scenario.edge_ghz)
    mem = scenario.edge_mem_gb
    scale[edge_block("edge_mem_free_gb", m)] = max(mem) if mem else 1.0
    return scale, per_edge

"""Packing of a flat vector and of the soft-label knowledge into N/2-slot chunks (numpy only).

The knowledge ``G`` is a matrix of logits with one column per action: the per-class table
((M+1) × (M+1), row ``c`` for label ``c``) or the logits on a shared proxy set (one row per
proxy state)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def chunk_count(length: int, slots: int) -> int:
    """Number of ``slots``-value chunks that hold ``length`` values."""
    return math.ceil(length / slots)


def chunk_sizes(length: int, slots: int) -> list[int]:
    """Values in each chunk: full chunks then the remainder."""
    n = chunk_count(length, slots)
    return [slots] * (n - 1) + [length - slots * (n - 1)] if n else []


def as_flat(values: np.ndarray | Sequence[float], name: str = "values") -> np.ndarray:
    """A 1-D float64 copy of ``values``; rejects empty and non-finite input."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        raise ValueError(f"{name} is empty; nothing to pack")
    if not np.all(np.isfinite(flat)):
        bad = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise ValueError(f"{name} has a non-finite value at index {bad}: {flat[bad]}")
    return flat


def split_chunks(values: np.ndarray | Sequence[float], slots: int) -> list[np.ndarray]:
    """Split a flat vector into chunks of at most ``slots`` values (views, no padding)."""
    flat = as_flat(values)
    return [flat[i : i + slots] for i in range(0, flat.size, slots)]


def join_chunks(chunks: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Concatenate decoded chunks and cut to ``length`` (a CKKS decode may be padded)."""
    flat = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in chunks])
    if flat.size < length:
        raise ValueError(f"decoded {flat.size} values but the payload declares {length}")
    return flat[:length]


def pack_model_and_labels(model: np.ndarray, knowledge: np.ndarray) -> np.ndarray:
    """One flat vector ``[W, G.ravel()]``.

    Packing both into one stream saves a ciphertext: 6,500 parameters plus a 33×33 table fill
    two 4,096-slot chunks (~0.47 MB) instead of three.
    """
    model = np.asarray(model, dtype=np.float64).ravel()
    if model.size:  # empty under feddistill: soft labels only, the weights stay on the device
        model = as_flat(model, "model")
    return np.concatenate([model, as_knowledge(knowledge).ravel()])


def unpack_model_and_labels(
    flat: np.ndarray, model_length: int, num_classes: int, rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_model_and_labels`: ``(W, G)`` with ``G`` of shape (rows, C)."""
    expected = model_length + rows * num_classes
    if flat.size != expected:
        raise ValueError(
            f"packed vector has {flat.size} values; model_length={model_length}, "
            f"num_classes={num_classes} and {rows} knowledge rows need {expected}"
        )
    return flat[:model_length].copy(), flat[model_length:].reshape(rows, num_classes)


def as_knowledge(knowledge: np.ndarray) -> np.ndarray:
    """Check that the knowledge is a finite (rows, M+1) matrix with M >= 1; return float64."""
    table = np.asarray(knowledge, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 2:
        raise ValueError(
            f"soft-label knowledge must be a (rows, M+1) matrix with M >= 1, got shape "
            f"{table.shape}"
        )
    as_flat(table, "soft-label knowledge")
    return table

"""Per-decision inference latency and serialised size of a network."""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from torch import nn


def measure_latency_us(
    net: nn.Module,
    n_features: int,
    history_slots: int,
    n_edges: int,
    reps: int = 1000,
    warmup: int = 50,
    batch: int = 1,
    threads: int | None = 1,
) -> float:
    """Median wall time of one forward pass on ``batch`` random states, in microseconds.

    Batch 1 with one thread is what a mobile device deciding one task sees; the median over many
    repetitions ignores scheduler hiccups. The thread count is restored afterwards.
    """
    samples = latency_samples_us(
        net, n_features, history_slots, n_edges, reps, warmup, batch, threads
    )
    return float(np.median(samples))


def latency_samples_us(
    net: nn.Module,
    n_features: int,
    history_slots: int,
    n_edges: int,
    reps: int = 1000,
    warmup: int = 50,
    batch: int = 1,
    threads: int | None = 1,
) -> np.ndarray:
    """Wall time of each of ``reps`` forward passes (after ``warmup``), microseconds."""
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    features = torch.rand(batch, n_features, generator=gen)
    history = torch.rand(batch, history_slots, n_edges, generator=gen)
    times: list[float] = []
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            for i in range(warmup + reps):
                start = time.perf_counter()
                net(features, history)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        net.train(was_training)
        torch.set_num_threads(old_threads)
    return np.asarray(times) * 1e6


def model_size_bytes(net: nn.Module) -> int:
    """Bytes of the serialised ``state_dict`` (int8 weights count one byte each)."""
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getbuffer().nbytes

"""All parameters of a network as one flat vector, and back (the HE layer packs that vector)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def count_params(net: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def param_shapes(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every parameter, in the order of :func:`flatten_params`."""
    return [(name, tuple(p.shape)) for name, p in net.named_parameters()]


def flatten_params(net: nn.Module) -> np.ndarray:
    """Every parameter, in ``named_parameters`` order, concatenated into one float64 vector.

    float64 so that CKKS packing and weighted sums do not lose the float32 values' precision.
    """
    with torch.no_grad():
        parts = [p.detach().reshape(-1).to(torch.float64) for p in net.parameters()]
        return torch.cat(parts).numpy().copy() if parts else np.zeros(0)


def unflatten_params(net: nn.Module, vector: np.ndarray) -> nn.Module:
    """Load a vector made by :func:`flatten_params` (of the same architecture) into ``net``."""
    vector = np.asarray(vector).reshape(-1)
    expected = count_params(net)
    if vector.size != expected:
        raise ValueError(
            f"parameter vector has {vector.size} values but the network has {expected}; "
            f"was it flattened from the same architecture and ratio?"
        )
    offset = 0
    with torch.no_grad():
        for p in net.parameters():
            n = p.numel()
            chunk = torch.from_numpy(np.ascontiguousarray(vector[offset : offset + n]))
            p.copy_(chunk.reshape(p.shape).to(p.dtype))
            offset += n
    return net

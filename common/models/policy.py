"""Wrap a torch network as a simulator policy ``policy(obs, sim) -> actions [E, N]``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class ScaledInputs(nn.Module):
    """``net`` behind its input normalisation: takes raw feature rows [B, F] and histories
    [B, K, M] (the simulator's units) and divides them by the divisors of
    :func:`common.mec.feature_scale` before ``net``. What a deployed student is exported as,
    and what :class:`NetPolicy` evaluates."""

    def __init__(self, net: nn.Module, feat_scale: Any, hist_scale: Any) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("feat_scale", torch.as_tensor(np.asarray(feat_scale, np.float32)))
        self.register_buffer("hist_scale", torch.as_tensor(np.asarray(hist_scale, np.float32)))

    def forward(self, features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.net(features / self.feat_scale, history / self.hist_scale)


class NetPolicy:
    """Argmax of the network's scores on normalised inputs, computed only where a task arrived.

    ``feat_scale`` ([F]) and ``hist_scale`` (scalar or broadcastable to [K, M]) are the divisors
    of :func:`common.mec.feature_scale`; devices without a task get action 0 (ignored by the
    simulator).
    """

    def __init__(self, net: nn.Module, feat_scale: Any, hist_scale: Any, name: str = "net") -> None:
        self.net = net
        self.name = name
        self.scaled = ScaledInputs(net, feat_scale, hist_scale)
        self.feat_scale, self.hist_scale = self.scaled.feat_scale, self.scaled.hist_scale

    def scores(self, features: np.ndarray, history: np.ndarray) -> np.ndarray:
        """Network outputs ``[n, M+1]`` for raw (unnormalised) ``features`` and ``history``."""
        f = torch.as_tensor(features, dtype=torch.float32)
        h = torch.as_tensor(history, dtype=torch.float32)
        self.net.eval()
        with torch.inference_mode():
            return self.scaled(f, h).numpy()

    def __call__(self, obs: Any, sim: Any = None) -> np.ndarray:
        mask = np.asarray(obs.mask, dtype=bool)
        actions = np.zeros(mask.shape, dtype=np.int64)
        if not mask.any():
            return actions
        e_idx, _ = np.nonzero(mask)
        features = np.asarray(obs.features)[mask]
        history = np.asarray(obs.history)[e_idx]
        actions[mask] = self.scores(features, history).argmax(axis=1)
        return actions

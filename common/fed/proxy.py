"""The shared proxy set: states every party regenerates from public information alone.

KECO's students imitate "the output information of the teacher model on the agent data set":
per-sample logits on states that every client (and, with encryption off, the server) has.
Here those states come from the public scenario and a public seed: a few episodes of the
public scenario (no client's devices, at the run's training loads) run by a public heuristic,
every task's observation recorded, and ``size`` of them kept at evenly spaced positions.
Nothing of any client's data goes into it, and every process derives the same rows.

The set is fixed for the whole run: KECO's correction Δ subtracts fresh logits from stale ones,
which only means something on the same rows.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from common.fed.settings import FederatedRunConfig, ProxyConfig
from common.mec import DeviceProfile, feature_scale, n_features
from common.mec.evaluate import task_states
from common.mec.policies import make_policy
from common.mec.scenario import ScenarioConfig

PROXY_SEED = 7_777_777
"""Public seed of the proxy episodes (offset by the run's seed, which is public too)."""
MAX_PROXY_EPISODES = 1000
"""Public episodes simulated at most when ``proxy.episodes`` is ``None``."""


@functools.lru_cache(maxsize=4)
def proxy_states(
    scenario: ScenarioConfig, proxy: ProxyConfig, seed: int, loads: tuple[float, ...] = (1.0,)
) -> tuple[np.ndarray, np.ndarray]:
    """The proxy set's raw feature rows [P, F] and load histories [P, K, M] (cached).

    Public episode ``i`` runs at load multiplier ``loads[i mod len(loads)]`` (the training
    loads); ``proxy.episodes`` of them, or (``None``) as many as it takes to hold twice
    ``proxy.size`` tasks.
    """
    features: list[np.ndarray] = []
    histories: list[np.ndarray] = []
    policy = make_policy(proxy.policy)
    i = 0
    while i < (proxy.episodes or MAX_PROXY_EPISODES):
        load = loads[i % len(loads)]
        p = np.full(scenario.n_devices, min(1.0, scenario.effective_arrival_prob * load))
        f, h = task_states(
            scenario, policy, 1, PROXY_SEED + 1000 * seed + i, DeviceProfile(arrival_prob=p)
        )
        features.append(f)
        histories.append(h)
        i += 1
        if proxy.episodes is None and sum(map(len, features)) >= 2 * proxy.size:
            break
    f = np.concatenate(features) if features else np.zeros((0, n_features(scenario.n_edges)))
    if len(f) < proxy.size:
        raise ValueError(
            f"strategy.proxy: {i} public episodes hold {len(f)} tasks, fewer than "
            f"proxy.size={proxy.size}; raise strategy.proxy.episodes or lower the size"
        )
    h = np.concatenate(histories)
    keep = np.linspace(0, len(f) - 1, proxy.size).round().astype(np.int64)
    return f[keep].astype(np.float32), h[keep].astype(np.float32)


def proxy_tensors(cfg: FederatedRunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's proxy set, normalised as the networks see it."""
    loads = cfg.strategy.local.train_loads or (1.0,)
    f, h = proxy_states(cfg.scenario, cfg.strategy.proxy, cfg.seed, tuple(loads))
    feat_scale, hist_scale = feature_scale(cfg.scenario)
    return torch.from_numpy(f / feat_scale).float(), torch.from_numpy(h / hist_scale).float()


def proxy_logits(cfg: FederatedRunConfig, net: nn.Module) -> np.ndarray:
    """A network's logits on the proxy set [P, M + 1] (what a client uploads as knowledge)."""
    f, h = proxy_tensors(cfg)
    net.eval()
    with torch.inference_mode():
        return net(f, h).double().numpy()

"""Non-IID client device profiles derived from the partition id, and the compute-time model.

A client is a group of devices with its own profile: arrival rate, task sizes, power modes,
channel quality, computation density and device speed. ``heterogeneity`` h scales how far each
client's factors stray from the scenario's: h = 0 gives identical (IID) clients, h = 1 strongly
non-IID ones. Profiles depend only on (seed, partition id), so every process derives the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from common.fed.settings import FederatedRunConfig
from common.mec import DeviceProfile
from common.mec.scenario import ScenarioConfig


@dataclass(frozen=True)
class ClientProfile:
    """One client's devices and the speed of its compute-time model."""

    partition_id: int
    devices: DeviceProfile
    speed_gflops: float
    """Training speed of the device group, GFLOP/s."""


def client_profile(
    scenario: ScenarioConfig,
    partition_id: int,
    heterogeneity: float,
    speed_gflops: float,
    seed: int,
) -> ClientProfile:
    """The profile of client ``partition_id`` (deterministic in ``seed`` and the id)."""
    if partition_id < 0:
        raise ValueError(f"partition_id must be >= 0, got {partition_id}")
    h = float(heterogeneity)
    rng = np.random.default_rng([seed, partition_id, 7919])
    n = scenario.n_devices
    # client-level factors (what makes clients differ) plus a little per-device spread
    load = 1.0 + h * rng.uniform(-0.6, 0.6)
    size = 1.0 + h * rng.uniform(-0.3, 0.3)
    p = np.clip(scenario.effective_arrival_prob * load * rng.uniform(0.9, 1.1, n), 0.0, 1.0)
    alpha_modes = np.asarray(scenario.alpha_modes)
    favourite_alpha = alpha_modes[rng.integers(len(alpha_modes))]
    alpha = np.where(
        rng.random(n) < h, favourite_alpha, alpha_modes[rng.integers(len(alpha_modes), size=n)]
    )
    dens_modes = np.asarray(scenario.density_gcycles_per_mbit)
    favourite_dens = dens_modes[rng.integers(len(dens_modes))]
    density = np.where(
        rng.random(n) < h, favourite_dens, dens_modes[rng.integers(len(dens_modes), size=n)]
    )
    channel_db = h * rng.uniform(-6.0, 6.0)
    devices = DeviceProfile(
        arrival_prob=p,
        size_scale=np.full(n, size),
        density=density,
        alpha=alpha,
        snr_offset_db=np.full(n, channel_db) + rng.normal(0.0, 1.0, n) * h,
        rate_scale=np.full(n, 10.0 ** (channel_db / 20.0)),
    )
    speed = speed_gflops * float(np.exp(h * rng.uniform(-1.0, 1.0)))
    return ClientProfile(partition_id, devices, speed)


def slow_clients(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """The partitions that are slow devices: exactly ``round(fraction × num_clients)`` of them,
    a seeded draw (the same in every process)."""
    count = int(round(fraction * num_clients))
    order = np.random.default_rng([seed, 15_485_863]).permutation(num_clients)
    return frozenset(int(pid) for pid in order[:count])


def federation_profile(cfg: FederatedRunConfig, partition_id: int) -> ClientProfile:
    """Client ``partition_id`` of the run ``cfg``: its non-IID profile, slowed down if it is
    one of the run's slow devices: by a factor log-uniform in ``[slow_factor / slow_spread,
    slow_factor]`` (a seeded draw per client), so the slowest cannot even produce fresh
    logits in time (KECO's set u) while the others can (set v)."""
    fed = cfg.federation
    profile = client_profile(
        cfg.scenario, partition_id, fed.heterogeneity, cfg.strategy.local.speed_gflops, cfg.seed
    )
    if partition_id in slow_clients(fed.num_clients, fed.slow_fraction, cfg.seed):
        draw = np.random.default_rng([cfg.seed, partition_id, 32_452_843]).random()
        factor = fed.slow_factor * fed.slow_spread ** (-draw)
        return dataclasses.replace(profile, speed_gflops=profile.speed_gflops * factor)
    return profile


def compute_seconds(
    samples: int,
    epochs: int,
    student_params: int,
    logit_params: int,
    speed_gflops: float,
    logit_samples: int | None = None,
) -> tuple[float, float]:
    """Simulated seconds to produce the round's logits, and to finish training as well.

    A forward pass costs ≈ 2 FLOP per parameter and sample, a training step ≈ 3 forward passes.
    Logits come from one forward pass of the logit network over ``logit_samples`` states (the
    proxy set; default: the buffer).
    """
    logit_samples = samples if logit_samples is None else logit_samples
    flops_logits = 2.0 * logit_params * logit_samples
    flops_train = 6.0 * student_params * samples * epochs
    rate = speed_gflops * 1e9
    return flops_logits / rate, (flops_logits + flops_train) / rate

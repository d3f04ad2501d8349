"""Run a policy in the simulator: ``python -m experiments.simulate scenario=qeco policy=greedy``.

Prints one JSON object (the metrics of DESIGN §3 plus ``scenario`` and ``policy``) as the last
line of stdout. Any scenario field can be overridden, e.g. ``scenario.n_devices=80``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from common.config import ConfigError, to_dict
from common.mec import evaluate_policy
from common.mec.policies import POLICIES, make_policy
from common.mec.scenario import ScenarioConfig, register_scenario_schema, scenario_from_dict
from experiments.cli import hydra_app

# --------------------------------------------------------------------------------------------
# Simulator CLI / benchmark
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulateConfig:
    """Arguments of ``python -m experiments.simulate``."""

    scenario: ScenarioConfig
    policy: str
    episodes: int
    seed: int
    batch: int
    """Episodes simulated in parallel (vectorised); results do not depend on it."""


def simulate_from_dict(raw: Any) -> SimulateConfig:
    """Validate the simulate CLI's config; unknown policies fail with the list of valid ones."""
    d = to_dict(raw)
    scenario = scenario_from_dict(d.get("scenario"))
    policy = d.get("policy")
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; valid policies are {sorted(POLICIES)}")
    episodes = d.get("episodes", 10)
    if not isinstance(episodes, int) or episodes <= 0:
        raise ConfigError(f"episodes must be a positive integer, got {episodes!r}")
    seed = d.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    batch = d.get("batch", 200)
    if not isinstance(batch, int) or batch <= 0:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}")
    return SimulateConfig(scenario, policy, episodes, seed, batch)


def simulate(cfg: DictConfig | dict) -> dict:
    """Validate ``cfg`` (fails before any work) and evaluate the policy."""
    sim_cfg = simulate_from_dict(cfg)
    metrics = evaluate_policy(
        sim_cfg.scenario,
        make_policy(sim_cfg.policy),
        episodes=sim_cfg.episodes,
        seed=sim_cfg.seed,
        batch=sim_cfg.batch,
    )
    return {"scenario": sim_cfg.scenario.name, "policy": sim_cfg.policy, **metrics}


@hydra_app("simulate")
def main(cfg: DictConfig) -> dict:
    """Print the metrics as one JSON line (and return them)."""
    result = simulate(cfg)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    register_scenario_schema()  # the only settings conf/simulate.yaml composes (no torch import)
    main()

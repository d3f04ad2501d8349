"""Run a policy in the simulator: ``python -m experiments.simulate scenario=qeco policy=greedy``.

Prints one JSON object (the metrics of DESIGN §3 plus ``scenario`` and ``policy``) as the last
line of stdout. Any scenario field can be overridden, e.g. ``scenario.n_devices=80``.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

from common.config import simulate_from_dict
from common.mec import evaluate_policy
from common.mec.policies import make_policy
from experiments.cli import hydra_app


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
    main()

"""Main experiment entry point: ``python -m experiments.run experiment=<name> [overrides]``.

Dispatches on ``experiment.task`` to ``experiments/tasks/<task>.py``; every task writes
``results.json`` (DESIGN §8) and its reports into the Hydra run directory, and the run's
tracker (``logger=csv|tensorboard|wandb``, :mod:`experiments.tracking`) logs its per-round rows,
final policy table, figures and summary. With ``optimized_metric`` set (the ``hparams_search``
configs set it) the job returns that number of its results, which Hydra's Optuna sweeper
optimises.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from common.config import ConfigError
from common.fed.settings import register_schemas
from experiments import tracking
from experiments.cli import hydra_app
from experiments.logs import setup_logging
from experiments.tasks import get_task
from experiments.tracking import logger_from_dict


def optimized_metric(results: Mapping[str, Any], path: str) -> float:
    """The number at dotted ``path`` of a run's results (``summary.final_qoe``): what a
    hyperparameter search optimises (``optimized_metric`` in the config)."""
    node: Any = results
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            valid = sorted(node) if isinstance(node, Mapping) else []
            raise ConfigError(
                f"optimized_metric={path!r}: the run's results have no {key!r} there; "
                f"keys at that level: {valid}"
            )
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise ConfigError(f"optimized_metric={path!r} is not a number in the results: {node!r}")
    return float(node)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the task named by ``cfg.experiment.task`` in ``run_dir`` under the run's tracker."""
    name = str(cfg.experiment.task)
    task = get_task(name)
    logger_from_dict(cfg.get("logger"))  # a bad logger fails here, before any work
    config = OmegaConf.to_container(cfg, resolve=True)
    with tracking.start(cfg.get("logger"), tracking.job_info(name, run_dir), config) as tracker:
        results = task(cfg, run_dir)
        tracker.log_results(results)
    return results


@hydra_app("config")
def main(cfg: DictConfig) -> float | None:
    """The job: run the experiment; under a sweeper, return its ``optimized_metric``."""
    setup_logging()
    metric = cfg.get("optimized_metric")
    if metric is not None and not isinstance(metric, str):
        raise ConfigError(f"optimized_metric must be a dotted key, got {metric!r}")
    results = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    return optimized_metric(results, metric) if metric else None


if __name__ == "__main__":
    # Ray's notice about a future default on every ray.init (a launcher's too): take it now
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    register_schemas()
    main()

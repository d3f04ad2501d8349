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
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from common.config import ConfigError, logger_from_dict, optimized_metric
from experiments import tracking
from experiments.cli import hydra_app
from experiments.logs import setup_logging
from experiments.tasks import get_task


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
    main()

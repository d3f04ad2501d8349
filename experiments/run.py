"""Main experiment entry point: ``python -m experiments.run experiment=<name> [overrides]``.

Dispatches on ``experiment.task`` to ``experiments/tasks/<task>.py``; every task writes
``results.json`` (DESIGN §8) and its reports into the Hydra run directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common.config import ConfigError
from experiments.tasks import get_task


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the task named by ``cfg.experiment.task`` in ``run_dir``."""
    return get_task(str(cfg.experiment.task))(cfg, run_dir)


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Progress of a ``-m`` sweep: a Hydra callback (``hydra.callbacks.sweep_progress`` in
``conf/config.yaml``) with a bar over the sweep's jobs on a terminal, one line per job otherwise.

The number of jobs comes from the sweep's overrides (``seed=0,1,2 he=ckks,off`` → 6) or the
Optuna sweeper's ``n_trials``. With the basic launcher the jobs run in this process and the bar
advances; launchers that run jobs elsewhere (joblib, Ray) print each job's line from the job
itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from common.progress import Progress

log = logging.getLogger("keco")
_bars: dict[int, Progress] = {}  # by callback id: never pickled with the callback to workers


def planned_jobs(config: DictConfig) -> int | None:
    """Jobs the sweep will run, or ``None`` when it cannot be told in advance."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if sweeper.get("n_trials") is not None:
        return int(sweeper.n_trials)
    overrides = [str(o) for o in config.hydra.overrides.task]
    overrides += [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - a count we cannot tell is not an error
        return None
    total = 1
    for override in parsed:
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                return None
            total *= len(list(override.sweep_string_iterator()))
    return total


class SweepProgress(Callback):
    """Counts the jobs of a sweep (see the module docstring)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.perf_counter()
        total = planned_jobs(config)
        _bars[id(self)] = Progress("sweep", total, unit="job", milestones=0)
        log.info("sweep: %s jobs into %s", total if total else "?", config.hydra.sweep.dir)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        bar = _bars.get(id(self))
        status = getattr(getattr(job_return, "status", None), "name", "?").lower()
        overrides = " ".join(str(o) for o in config.hydra.overrides.task)
        count = f" ({bar.done + 1}/{bar.total or '?'})" if bar is not None else ""
        log.info("sweep: job %s %s%s: %s", config.hydra.job.num, status, count, overrides)
        if bar is not None:
            bar.update(1)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        bar = _bars.pop(id(self), None)
        if bar is not None:
            bar.close()
        log.info(
            "sweep: done in %.0f s (%s)", time.perf_counter() - self.start, config.hydra.sweep.dir
        )

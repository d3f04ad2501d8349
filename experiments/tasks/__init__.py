"""Experiment tasks of ``python -m experiments.run``: module ``<task>`` exposes
``run(cfg, run_dir) -> dict``."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.config import ConfigError


def available_tasks() -> list[str]:
    """Names of the task modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_task(name: str) -> Callable[[Any, Path], dict]:
    """The ``run`` function of task ``name``; unknown names fail with the valid ones."""
    tasks = available_tasks()
    if name not in tasks:
        raise ConfigError(f"unknown experiment task {name!r}; valid tasks are {tasks}")
    return importlib.import_module(f"{__name__}.{name}").run

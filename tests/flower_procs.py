"""What the Flower process tests check after a run: which processes a given FLWR_HOME started."""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def flower_processes(root: Path) -> list[int]:
    """Live processes (not this one, not zombies) whose FLWR_HOME is ``root`` or lies under it:
    each test gives the Flower processes it starts a home of their own, so these are its."""
    root = Path(root)
    pids = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            home = proc.environ().get("FLWR_HOME")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # ended while we looked, or another user's (not ours to find)
        if home is not None and (Path(home) == root or root in Path(home).parents):
            pids.append(proc.pid)
    return pids

"""Process facts read from Linux's ``/proc/<pid>/stat`` (no psutil): used by the deployment
driver to watch and stop its process groups and by the benchmarks to sum a process tree."""

from __future__ import annotations

import os
from collections.abc import Iterator

# Fields of /proc/<pid>/stat after the command name, 0-based (proc(5) numbers them from 3).
STATE, PPID, PGRP, UTIME, STIME, STARTTIME = 0, 1, 2, 11, 12, 19


def stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or ``None`` if it is gone.

    The command name may hold spaces and parentheses, so the fields follow the last ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def all_stats() -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, stat fields)`` of every process in ``/proc`` (those that vanish are skipped)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := stat_fields(entry.name)) is not None:
            yield int(entry.name), fields

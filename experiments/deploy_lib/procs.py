"""Start and stop the Flower processes of a deployment, each in its own process group.

Every process is started in a new session (its own process group), with its output in a log
file. :meth:`Processes.stop_all` ends each group by its id (SIGTERM, then SIGKILL after a grace
period), which also ends the ``flwr-serverapp`` / ``flwr-clientapp`` children a SuperExec
spawned. Stopping is idempotent and also runs at interpreter exit, so a failure or Ctrl-C never
leaves a SuperLink behind.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

GRACE_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """One started process (and its process group)."""

    name: str
    argv: list[str]
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group (the process and the apps it spawned)."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _live(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs: not gone and not a zombie (exited, not yet reaped)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; only its state is hidden from us


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also reaches zombies (exited, not yet reaped by a dead parent): they do not count.
    # psutil does not report process groups: getpgid(2) gives each process's.
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and _live(proc):
                return True
        except ProcessLookupError:
            continue  # ended while we looked
    return False


def children(pid: int) -> list[int]:
    """Ids of the live processes whose parent is ``pid`` (none when ``pid`` is gone)."""
    try:
        kids = psutil.Process(pid).children()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    return [kid.pid for kid in kids if _live(kid)]


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty when it is gone or hidden from us)."""
    try:
        return psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


@dataclass
class Processes:
    """The processes a deployment started; stop them with :meth:`stop_all` (also at exit)."""

    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_dir = Path(self.log_dir)
        atexit.register(self.stop_all)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log: str | Path | None = None,
    ) -> Proc:
        """Start ``argv`` as ``name`` in a new process group, output to ``log``."""
        if name in self.procs and self.procs[name].alive():
            raise RuntimeError(f"a process named {name!r} is already running")
        log_path = Path(log) if log is not None else self.log_dir / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as fh:
            popen = subprocess.Popen(
                list(argv), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, **(env or {})}, cwd=cwd,
                start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, list(argv), popen, log_path)
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group of ``name`` and reap it."""
        proc = self.procs[name]
        proc.signal_group(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                proc.popen.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                proc.signal_group(signal.SIGKILL)
                proc.popen.wait()

    def stop_all(self) -> None:
        """SIGTERM every process group (newest first), wait, then SIGKILL what is left."""
        procs = list(self.procs.values())[::-1]
        for proc in procs:
            proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for proc in procs:
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        for proc in procs:
            if _group_alive(proc.pid):
                proc.signal_group(signal.SIGKILL)
            try:
                proc.popen.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                pass

    def alive_groups(self) -> list[str]:
        """Names of the processes whose group still has a live member."""
        return [name for name, proc in self.procs.items() if _group_alive(proc.pid)]


def wait_for(
    what: str,
    ready: Callable[[], bool],
    timeout_s: float,
    *,
    watch: Sequence[Proc] = (),
    interval_s: float = 0.5,
) -> None:
    """Poll ``ready()`` until it is true; fail early (with the log) when a watched process dies."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return
        for proc in watch:
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.name} exited with code {proc.returncode()} while waiting for {what}; "
                    f"its log ({proc.log}) ends with:\n{proc.log_tail()}"
                )
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} ({p.log}):\n{p.log_tail(1500)}" for p in watch)
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{logs}")
        time.sleep(interval_s)

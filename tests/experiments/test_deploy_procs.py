"""Process facts and process groups of the deployment driver (``experiments.deploy_lib.procs``).

Every process a test starts is stopped by the test itself: by its ``Popen`` or, for the
processes those start, through the :class:`Processes` that started their group.
"""

import os
import signal
import subprocess
import sys

import psutil

from experiments.deploy_lib.procs import Processes, children, cmdline

SLEEP = [sys.executable, "-c", "import signal; signal.pause()", "keco-procs-test"]
"""A child that runs until a signal ends it (the last argument only marks its command line);
it reads no stdin, so it does not end with the process that started it."""


def _wait_until_exited(pid: int) -> None:
    """Block until our child ``pid`` has exited, leaving it unreaped: a zombie."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def test_children_and_cmdline_follow_a_child_to_its_end():
    child = subprocess.Popen(SLEEP)
    try:
        assert child.pid in children(os.getpid())
        assert cmdline(child.pid) == SLEEP
        child.kill()
        _wait_until_exited(child.pid)
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
        assert child.pid not in children(os.getpid())  # a zombie is no live child
    finally:
        child.kill()
        child.wait()
    assert child.pid not in children(os.getpid())
    assert cmdline(child.pid) == [] and children(child.pid) == []  # gone: nothing, no error


def test_a_group_lives_while_a_member_runs_and_stop_all_ends_it(tmp_path):
    # the leader starts a member of its own group, prints its pid and exits
    leader = (
        f"import subprocess, sys\nkid = subprocess.Popen({SLEEP!r})\nprint(kid.pid, flush=True)\n"
    )
    with Processes(tmp_path) as procs:
        proc = procs.start("leader", [sys.executable, "-c", leader])
        proc.popen.wait()
        member = psutil.Process(int(proc.log.read_text().split()[-1]))
        assert member.cmdline() == SLEEP and os.getpgid(member.pid) == proc.pid
        assert procs.alive_groups() == ["leader"]  # the leader is gone, its member is not
        procs.stop_all()
        assert procs.alive_groups() == []
        # the member got the group's SIGTERM (it may linger as a zombie for init to reap)
        assert not member.is_running() or member.status() == psutil.STATUS_ZOMBIE


def test_a_group_of_zombies_is_not_alive(tmp_path):
    with Processes(tmp_path) as procs:
        proc = procs.start("sleeper", SLEEP)
        assert procs.alive_groups() == ["sleeper"]
        os.kill(proc.pid, signal.SIGKILL)
        _wait_until_exited(proc.pid)
        os.killpg(proc.pid, 0)  # the kernel still signals the group: its zombie is a member
        assert procs.alive_groups() == []
        procs.stop_all()  # reaps it
    assert proc.returncode() == -signal.SIGKILL

"""``/proc`` stat reading shared by the deployment driver and the benchmarks."""

import os
import subprocess
import sys

from experiments.deploy_lib.procs import children
from experiments.procfs import PGRP, PPID, STARTTIME, STATE, all_stats, stat_fields


def test_stat_fields_of_this_process_and_of_a_child_with_a_tricky_name():
    own = stat_fields(os.getpid())
    assert own is not None and int(own[PPID]) == os.getppid()
    assert int(own[PGRP]) == os.getpgid(0) and own[STATE] in (b"R", b"S")
    # a command name with spaces and a ')' must not shift the fields
    code = "open('/proc/self/comm', 'w').write('a b) c'); print('ok', flush=True); input()"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ok"
        assert open(f"/proc/{child.pid}/comm").read().strip() == "a b) c"
        fields = stat_fields(child.pid)
        assert fields is not None and int(fields[PPID]) == os.getpid()
        assert child.pid in children(os.getpid())
        assert child.pid in {pid for pid, _ in all_stats()}
        assert int(fields[STARTTIME]) >= int(own[STARTTIME])
    finally:
        child.kill()
        child.wait()
    assert stat_fields(child.pid) is None and child.pid not in children(os.getpid())

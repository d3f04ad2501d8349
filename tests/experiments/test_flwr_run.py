"""``flwr run .``: the same apps through Flower's own CLI and a local SuperLink.

The test uses its own FLWR_HOME, disables telemetry and the SuperLink's runtime ``uv sync``,
and stops the background SuperLink it caused to start, by process id.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.crypto import holds_secret_key
from tests.flower_procs import flower_processes
from tests.keycheck import assert_no_secret_key

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flwr", path=str(BIN)) is None, reason="flwr CLI not installed")
def test_flwr_run_local_simulation(tmp_path):
    home, run_dir = tmp_path / "flwr-home", tmp_path / "run"
    home.mkdir()
    env = {
        **os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # fmt: skip
    overrides = (
        "federation.num_clients=2 federation.rounds=2 model=mlp model.hidden=[32] "
        "scenario.n_devices=8 scenario.n_slots=30 experiment.teacher_training.episodes=2 "
        "experiment.teacher_training.steps=50 strategy.local.episodes=1 strategy.local.epochs=2 "
        "strategy.local.eval_episodes=1"
    )
    run_config = f'overrides="{overrides}" run-dir="{run_dir}"'
    try:
        r = subprocess.run(
            [str(BIN / "flwr"), "run", ".", "--run-config", run_config],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Successfully started run" in r.stdout
        server_json = run_dir / "server.json"
        deadline = time.monotonic() + 600
        while not server_json.exists() and time.monotonic() < deadline:
            time.sleep(2)
        log = home / "local-superlink" / "superlink.log"
        assert server_json.exists(), log.read_text()[-3000:]
        rounds = json.loads(server_json.read_text())["rounds"]
        assert [row["round"] for row in rounds] == [1, 2]
        assert all(row["set_x"] == 2 and row["bytes_up"] > 0 for row in rounds)
        assert (run_dir / "public.ctx").exists()
        # the ServerApp's run directory never holds the secret key: the clients' directory does
        clients = Path(f"{run_dir}-clients")
        assert_no_secret_key(run_dir, clients / "secret.ctx")
        assert holds_secret_key(clients / "secret.ctx")
    finally:
        for pid in flower_processes(home):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _ in range(20):  # up to 10 s for a clean exit, then force
            if not flower_processes(home):
                break
            time.sleep(0.5)
        for pid in flower_processes(home):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1)
    assert flower_processes(home) == []

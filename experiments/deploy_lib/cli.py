"""Drive the ``flwr`` CLI against one SuperLink, with a private ``FLWR_HOME``.

The connection lives in ``$FLWR_HOME/config.toml`` (Flower 1.41 keeps SuperLink connections
there, not in ``pyproject.toml``): an explicit ``address`` makes the CLI talk to our SuperLink's
Control API instead of starting a local simulation SuperLink. Every call uses ``--format json``
and returns the parsed object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
CONNECTION = "keco-deploy"
FINISHED = "finished:"


def flwr_exe() -> str:
    """The ``flwr`` executable of this environment."""
    exe = BIN / "flwr"
    if not exe.exists():
        raise FileNotFoundError(f"the flwr CLI is not installed next to {sys.executable}")
    return str(exe)


def base_env(home: str | Path) -> dict[str, str]:
    """Environment of every Flower process: its own FLWR_HOME, no telemetry, no ``uv sync``."""
    return {
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25",  # SuperExecs pick up tasks sooner
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON string syntax is valid TOML for these values)."""
    return json.dumps(value)


def write_run_config(path: str | Path, values: dict[str, str]) -> Path:
    """A TOML file for ``flwr run --run-config <file>`` (no shell quoting involved)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key} = {_toml_str(val)}\n" for key, val in values.items()))
    return path


class FlwrCli:
    """The ``flwr`` CLI bound to one SuperLink connection."""

    def __init__(
        self, home: str | Path, address: str, root_certificates: str | Path | None
    ) -> None:
        """``root_certificates=None`` means a plaintext (insecure) connection."""
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [
            "[superlink]",
            f"default = {_toml_str(CONNECTION)}",
            "",
            f"[superlink.{CONNECTION}]",
            f"address = {_toml_str(address)}",
        ]
        if root_certificates is None:
            lines.append("insecure = true")
        else:
            lines.append(f"root-certificates = {_toml_str(str(Path(root_certificates).resolve()))}")
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")
        self.env = {**os.environ, **base_env(self.home)}

    def call(self, *args: str, cwd: str | Path | None = None, check: bool = True) -> Any:
        """Run ``flwr <args> --format json``; the parsed JSON (or a dict with the error)."""
        cmd = [flwr_exe(), *args, "--format", "json"]
        try:
            done = subprocess.run(
                cmd, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired as err:
            if check:
                raise RuntimeError(f"`flwr {' '.join(args)}` did not answer in 300 s") from err
            return {"success": False, "returncode": None}
        start = done.stdout.find("{")
        try:
            out = json.loads(done.stdout[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            out = {}
        if check and (done.returncode != 0 or not out.get("success", False)):
            raise RuntimeError(
                f"`flwr {' '.join(args)}` failed (exit {done.returncode}):\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        out.setdefault("success", False)
        out.setdefault("returncode", done.returncode)
        return out

    def register(self, public_key: str | Path) -> int:
        """``flwr supernode register``; returns the node id."""
        out = self.call("supernode", "register", str(public_key), CONNECTION)
        return int(out["node-id"])

    def nodes(self, check: bool = True) -> list[dict[str, Any]]:
        """``flwr supernode ls``: node id and status of every known SuperNode."""
        return list(self.call("supernode", "ls", CONNECTION, check=check).get("nodes", []))

    def online(self) -> int:
        """Number of SuperNodes the SuperLink sees online (0 if it cannot be asked now)."""
        return sum(n.get("status") == "online" for n in self.nodes(check=False))

    def run(self, app_dir: str | Path, run_config: str | Path) -> int:
        """``flwr run <app_dir> --run-config <file>``; returns the run id."""
        out = self.call("run", str(app_dir), CONNECTION, "--run-config", str(run_config))
        return int(out["run-id"])

    def status(self, run_id: int) -> str:
        """The status of a run (``pending``, ``running``, ``finished:completed``, ...)."""
        out = self.call("ls", CONNECTION, "--run-id", str(run_id), check=False)
        runs = out.get("runs", [])  # "unknown" when the CLI failed this time: ask again later
        return str(runs[0]["status"]) if runs else "unknown"

    def stop(self, run_id: int) -> bool:
        """``flwr stop``; whether the SuperLink accepted the stop request."""
        return bool(self.call("stop", str(run_id), CONNECTION, check=False).get("success"))

    def logs(self, run_id: int) -> str:
        """The ServerApp's log of a run (``flwr log --show``); empty if it cannot be read."""
        cmd = [flwr_exe(), "log", str(run_id), CONNECTION, "--show"]
        try:
            done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout

    def wait(self, run_id: int, timeout_s: float, poll_s: float = 3.0) -> str:
        """Wait until the run has finished; returns its final status."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(run_id)
            if status.startswith(FINISHED):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {status!r} after {timeout_s:.0f}s")
            time.sleep(poll_s)

"""One way in (``experiments.cli``): every command is a Hydra app that ends the same way on a bad
config: exit code 2, before any work starts, and for an unknown key the list of valid ones."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import report, simulate

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    "FLWR_TELEMETRY_ENABLED": "0",
    "HYDRA_FULL_ERROR": "0",
}
COMMANDS = {  # python -m experiments.<command>: keys its error must list
    "run": ["experiment", "federation", "scenario", "seed", "strategy"],
    "simulate": ["batch", "episodes", "policy", "scenario", "seed"],
    "deploy": ["app_overrides", "auth", "clients", "kill_one_at_round", "rounds", "tls"],
    "compose": ["clients", "engine", "images", "rounds"],
    "bench": ["clients", "overrides", "suite"],
    "report": ["dir", "out"],
    "figures": ["dir", "title"],
    "export": ["dir", "out", "states"],
}


def end(main, *argv: str) -> int:
    """``main(argv)`` in this process; its exit code."""
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    return exit_.value.code


def test_every_command_is_checked_here():
    commands = {
        p.stem
        for p in (ROOT / "experiments").glob("*.py")
        if 'if __name__ == "__main__":' in p.read_text()
    }
    assert commands == set(COMMANDS)


@pytest.mark.parametrize("command, listed", COMMANDS.items(), ids=list(COMMANDS))
def test_unknown_key_exits_2_with_the_valid_keys(command, listed, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", f"experiments.{command}", "no_such_key=1"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    assert "error: unknown key 'no_such_key'" in r.stderr
    line = next(x for x in r.stderr.splitlines() if x.strip().startswith("valid keys:"))
    valid = line.split(":", 1)[1].replace(",", " ").split()
    assert set(listed) <= set(valid) and "hydra" not in valid
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_nested_and_swept_unknown_keys(capsys):
    assert end(simulate.main, "scenario.n_devics=8", "episodes=1") == 2
    err = capsys.readouterr().err
    assert "unknown key 'scenario.n_devics'" in err and "did you mean 'scenario.n_devices'" in err
    assert "valid keys of scenario:" in err and "n_slots" in err
    # -m: Hydra composes a sweep's values only per job; the key is checked up front
    assert end(simulate.main, "-m", "seed=0,1", "no_such_key=1,2") == 2
    assert "unknown key 'no_such_key'" in capsys.readouterr().err


def test_other_bad_overrides_and_missing_values_exit_2(capsys):
    assert end(simulate.main, "scenario=atlantis") == 2
    assert "Available options in 'scenario'" in capsys.readouterr().err
    assert end(simulate.main, "episodes=[1,") == 2
    assert "cannot parse the override 'episodes=[1,'" in capsys.readouterr().err
    assert end(simulate.main, "seed=0,1") == 2  # a sweep without -m
    assert "--multirun" in capsys.readouterr().err
    assert end(report.main) == 2
    assert "dir has no value: add dir=<value>" in capsys.readouterr().err

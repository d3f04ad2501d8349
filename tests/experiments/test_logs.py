"""Clean output: one line per event (a ``make demo``-like run, counted), third-party chatter
hidden, progress as a bar on a terminal and as a few plain lines otherwise; the same run checks
``logger=tensorboard``'s event files against ``results.json``."""

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from common.progress import Progress, progress
from experiments.logs import _DropBanner, route_flower_logs

ROOT = Path(__file__).resolve().parents[2]
# `make demo` (conf/demo.yaml: KECO with CKKS, Ray, the report) at a tiny size
DEMO = [
    "--config-name", "demo", "federation.num_clients=2", "federation.rounds=2",
    "scenario.n_devices=8", "scenario.n_slots=30", "model.hidden=[32]",
    "experiment.teacher_training.episodes=2", "experiment.teacher_training.steps=100",
    "experiment.teacher_training.dagger_rounds=1", "experiment.final_eval_episodes=2",
    "strategy.local.episodes=1", "strategy.local.epochs=2", "strategy.local.eval_episodes=1",
    "strategy.proxy.size=64", "logger=tensorboard",
]  # fmt: skip
PER_ROUND = ("configure_train: sampled", "configure_evaluate: sampled")
"""Flower's lines that legitimately repeat once per round (every other line is one event)."""
PREFIX = re.compile(r"^(\x1b\[[0-9;]*m)*(\[[^\]]*\]\s*)*(\d\d:\d\d:\d\d\s+)?")


def message(line: str) -> str:
    """A console line without colours, timestamps, levels and logger names."""
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    line = re.sub(r"^\d\d:\d\d:\d\d (INFO|WARNING|ERROR|DEBUG) [\w.]+: ", "", line)
    line = re.sub(r"^(INFO|WARNING|ERROR|DEBUG)\s*:\s*", "", line)
    return line.strip()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run(
        [sys.executable, "-m", "experiments.run", *DEMO, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:]
    return run_dir, r.stdout.splitlines()


@pytest.mark.slow
def test_demo_prints_every_event_once(demo_run):
    run_dir, lines = demo_run
    messages = [message(line) for line in lines if line.strip()]
    counts = Counter(messages)
    repeated = {m: n for m, n in counts.items() if n > 1 and not m.startswith(PER_ROUND)}
    assert not repeated, f"lines printed more than once: {repeated}"
    for start in PER_ROUND:
        assert sum(n for m, n in counts.items() if m.startswith(start)) == 2  # 2 rounds
    assert [m for m in messages if m.startswith("[round ")][0].startswith("[round 1/2] loss=")
    assert sum(m.startswith("[round ") for m in messages) == 2
    assert messages[-1] == f"report: {run_dir}/report.md"
    text = "\n".join(lines)
    for chatter in ("alembic", "DEPRECATED FEATURE", "DEBUG", "FutureWarning", "wandb"):
        assert chatter not in text, chatter
    # not a terminal: the teacher's progress is a few plain lines (4 per training round)
    assert sum("teacher training (round" in m for m in messages) == 8
    # Hydra's log file has the same lines as the console
    log_lines = (run_dir / "run.log").read_text().splitlines()
    assert sum("[round " in line for line in log_lines) == 2


@pytest.mark.slow
def test_demo_with_logger_tensorboard_writes_the_rounds(demo_run):
    from tests.experiments.test_tracking import tensorboard_events

    run_dir, _ = demo_run
    results = json.loads((run_dir / "results.json").read_text())
    acc = tensorboard_events(run_dir / "tensorboard")
    for key in ("train_loss", "eval_qoe", "eval_drop_ratio", "set_x", "set_u", "set_v",
                "bytes_up", "bytes_down", "seconds"):  # fmt: skip
        events = acc.Scalars(f"round/{key}")
        assert [e.step for e in events] == [1, 2]
        expected = [row[key] for row in results["rounds"]]
        assert [e.value for e in events] == pytest.approx(expected, rel=1e-6), key
    student = results["policies"]["student"]["qoe"]
    assert acc.Scalars("policy/student/qoe")[0].value == pytest.approx(student, rel=1e-6)
    assert {"figures/rounds_qoe", "figures/policies"} <= set(acc.Tags()["images"])


def test_flower_lines_go_through_the_root_handler_once():
    from flwr.supercore.logger import FLOWER_LOGGER, ConsoleHandler

    route_flower_logs()
    assert not any(isinstance(h, ConsoleHandler) for h in FLOWER_LOGGER.handlers)
    assert FLOWER_LOGGER.level == logging.INFO and FLOWER_LOGGER.propagate
    record = logging.LogRecord(
        "flwr", logging.WARNING, __file__, 1, "DEPRECATED FEATURE: %s", ("The `run_simulation`",),
        None,
    )  # fmt: skip
    assert not _DropBanner().filter(record)
    record.args = ("something else",)
    assert _DropBanner().filter(record)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_plain_lines_off_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="keco.progress")
    with Progress("teacher", total=1000, unit="step", stream=io.StringIO()) as bar:
        for _ in range(1000):
            bar.update(1, loss=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[0].startswith("teacher: 250/1000 steps (25%) loss=0.5")
    assert lines[-1].startswith("teacher: 1000/1000 steps (100%)")
    caplog.clear()
    assert list(progress(range(3), "quiet", milestones=0)) == [0, 1, 2] and not caplog.records


def test_progress_bar_on_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="keco.progress")
    term = FakeTerminal()
    with Progress("sweep", total=3, unit="job", stream=term) as bar:
        for _ in range(3):
            bar.update(1)
    out = term.getvalue()
    assert "sweep:   0%|" in out and "0/3 [" in out and not caplog.records  # a bar, no lines

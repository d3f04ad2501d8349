"""Experiment tracking for ``python -m experiments.run``: the ``logger`` config group.

=================  ==========================================================================
``logger=``        what a run writes (always beside ``results.json``)
=================  ==========================================================================
``csv`` (default)  ``rounds.csv`` (one row per round, every recorded metric) and
                   ``policies.csv`` (the final policy table); in a ``-m`` sweep each job also
                   appends a JSON line (its number, overrides and summary) to
                   ``<sweep dir>/jobs.jsonl``
``tensorboard``    the CSVs, and event files in ``<run dir>/tensorboard``: ``round/<metric>``
                   per round (``round/<run>/<metric>`` for the federations of a study), the
                   policy table as text and ``policy/<name>/<metric>`` scalars, the PNG figures
                   as images, the job's overrides and summary as hparams
``wandb``          the CSVs, and a Weights & Biases run (offline by default, in
                   ``<run dir>/wandb``) with the same series, a table and images; a sweep's
                   jobs share a group
=================  ==========================================================================

Per-round rows are logged live (the federation task hands :meth:`Tracker.log_round` to the
server loop) and again at the end for any the run did not stream (a resumed run's earlier
rounds, a study's federations). Only numbers are logged: the rows are the server's aggregates of
the plaintext metrics that clients report (losses, QoE, drop ratio, client sets, bytes, time),
and the policy table is the key owner's evaluation; no model, logit or other decrypted value of
the federation is ever given to a tracker.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ConfigError, build, to_dict

# --------------------------------------------------------------------------------------------
# Experiment tracking (conf/logger/*.yaml) and hyperparameter search
# --------------------------------------------------------------------------------------------
LOGGERS = ("csv", "tensorboard", "wandb")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass(frozen=True)
class LoggerConfig:
    """Where a run's per-round rows, policy table and figures are tracked (``logger=...``)."""

    name: str = "csv"
    """``csv`` (files in the run directory), ``tensorboard`` (event files) or ``wandb``."""
    dir: str | None = None
    """Where the tracker writes; ``None``: inside the run directory."""
    mode: str = "offline"
    """wandb: ``offline`` (default; ``wandb sync`` uploads later), ``online`` or ``disabled``."""
    project: str = "keco-flower"
    """wandb project."""
    entity: str | None = None
    """wandb entity (user or team); ``None``: the account's default."""
    group: str | None = None
    """wandb group; ``None``: the sweep's name in a ``-m`` sweep, no group in a single run."""
    tags: tuple[str, ...] = ()
    """wandb tags."""

    def validate(self) -> LoggerConfig:
        if self.name not in LOGGERS:
            raise ConfigError(
                f"logger.name must be one of {list(LOGGERS)} (choose with logger=<name>), "
                f"got {self.name!r}"
            )
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"logger.mode must be one of {list(WANDB_MODES)}, got {self.mode!r}")
        return self


def logger_from_dict(raw: Any) -> LoggerConfig:
    """Build and validate a :class:`LoggerConfig` from the ``logger`` node (``None``: csv)."""
    d = to_dict(raw)
    if "tags" in d:
        d["tags"] = tuple(str(t) for t in d["tags"] or ())
    return build(LoggerConfig, d, "logger").validate()


log = logging.getLogger("keco")

POLICY_SCALARS = ("qoe", "drop_ratio", "delay", "energy_total", "throughput", "params", "infer_us")
"""Policy metrics logged as scalars (the CSV and the text table hold every metric)."""


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``row`` (booleans as 0/1); strings, lists and arrays are left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float) and math.isfinite(value):
            out[str(key)] = float(value)
    return out


@dataclass(frozen=True)
class JobInfo:
    """Which run this is: a single run, or job ``num`` of a ``-m`` sweep in ``sweep_dir``."""

    task: str
    run_dir: Path
    sweep_dir: Path | None = None
    num: int | None = None
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        base = self.task if self.num is None else f"{self.task}-{self.num}"
        return " ".join([base, *self.overrides]) if self.overrides else base

    @property
    def group(self) -> str | None:
        return None if self.sweep_dir is None else f"{self.task}-{self.sweep_dir.name}"


def job_info(task: str, run_dir: Path) -> JobInfo:
    """The Hydra job's place (single run or sweep job); a plain run outside Hydra otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return JobInfo(task, Path(run_dir))
    hc = HydraConfig.get()
    overrides = tuple(str(o) for o in hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN:
        return JobInfo(task, Path(run_dir), Path(str(hc.sweep.dir)), int(hc.job.num), overrides)
    return JobInfo(task, Path(run_dir), overrides=overrides)


@dataclass
class Tracker:
    """``logger=csv``; the other trackers add their backend on top of the CSV files."""

    cfg: LoggerConfig
    job: JobInfo
    rows: list[dict[str, Any]] = field(default_factory=list)
    logged: set[tuple[str | None, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- what tasks call -----------------------------------------------------------------
    def log_round(self, row: Mapping[str, Any], run: str | None = None) -> None:
        """One round's row (``row["round"]`` is the step); ``run`` names the federation when a
        job runs several (a study)."""
        run = run if run is not None else row.get("run")
        step = int(row.get("round", len(self.rows) + 1))
        with self.lock:
            if (run, step) in self.logged:
                return
            self.logged.add((run, step))
            self.rows.append(dict(row))
            self._write_rounds()
            self._round(scalars(row), step, run)

    def log_results(self, results: Mapping[str, Any]) -> None:
        """The end of a run: rounds not streamed yet, the policy table, the figures in the run
        directory and the summary."""
        for row in results.get("rounds") or []:
            self.log_round(row)
        policies = results.get("policies") or {}
        if policies:
            self._write_policies(policies)
            self._policies(policies)
        figures = sorted(self.job.run_dir.glob("*.png"))
        if figures:
            self._figures(figures)
        summary = scalars(results.get("summary") or {})
        self._summary(summary)
        if self.job.sweep_dir is not None:
            line = {"job": self.job.num, "overrides": list(self.job.overrides)}
            line.update(run_dir=str(self.job.run_dir), summary=summary)
            with (self.job.sweep_dir / "jobs.jsonl").open("a") as f:
                f.write(json.dumps(line) + "\n")

    def close(self) -> None:
        """Flush and release the backend."""

    # ---- CSV files ---------------------------------------------------------------------------
    def _write_rounds(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        with (self.job.run_dir / "rounds.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    def _write_policies(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        keys: list[str] = []
        for metrics in policies.values():
            keys += [k for k in scalars(metrics) if k not in keys]
        with (self.job.run_dir / "policies.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["policy", *keys])
            for name, metrics in policies.items():
                values = scalars(metrics)
                writer.writerow([name, *(values.get(k, "") for k in keys)])

    # ---- backend hooks (no-ops for csv) ------------------------------------------------------
    def _round(self, values: dict[str, float], step: int, run: str | None) -> None:
        pass

    def _policies(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        pass

    def _figures(self, paths: list[Path]) -> None:
        pass

    def _summary(self, summary: dict[str, float]) -> None:
        pass


def _tag(prefix: str, key: str, run: str | None) -> str:
    return f"{prefix}/{key}" if run is None else f"{prefix}/{run}/{key}"


def policy_table(policies: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list]]:
    """Columns and rows of the policy table (the policy's name, then :data:`POLICY_SCALARS`)."""
    columns = [m for m in POLICY_SCALARS if any(m in p for p in policies.values())]
    rows = [[name, *(scalars(p).get(m) for m in columns)] for name, p in policies.items()]
    return ["policy", *columns], rows


class TensorBoardTracker(Tracker):
    """``logger=tensorboard``: event files (see the module docstring)."""

    def __init__(self, cfg: LoggerConfig, job: JobInfo) -> None:
        super().__init__(cfg, job)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError(
                "logger=tensorboard needs the tensorboard package: pip install "
                "'keco-flower[tracking]'"
            ) from err
        self.log_dir = Path(cfg.dir) if cfg.dir else job.run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_text("job", f"`{job.name}`", 0)

    def _round(self, values: dict[str, float], step: int, run: str | None) -> None:
        for key, value in values.items():
            if key != "round":
                self.writer.add_scalar(_tag("round", key, run), value, step)
        self.writer.flush()

    def _policies(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        columns, rows = policy_table(policies)

        def cell(value: Any) -> str:
            return "" if value is None else f"{value:.6g}" if isinstance(value, float) else value

        lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        self.writer.add_text("policies", "\n".join(lines), 0)
        for row in rows:
            for metric, value in zip(columns[1:], row[1:], strict=True):
                if value is not None:
                    self.writer.add_scalar(f"policy/{row[0]}/{metric}", value, 0)

    def _figures(self, paths: list[Path]) -> None:
        from matplotlib import image

        for path in paths:
            self.writer.add_image(f"figures/{path.stem}", image.imread(path), 0, dataformats="HWC")

    def _summary(self, summary: dict[str, float]) -> None:
        hparams = dict(o.split("=", 1) for o in self.job.overrides if "=" in o)
        metrics = {f"summary/{k}": v for k, v in summary.items()}
        if metrics:
            self.writer.add_hparams(hparams or {"job": self.job.name}, metrics, run_name=".")

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """``logger=wandb``: a Weights & Biases run, offline unless configured."""

    def __init__(self, cfg: LoggerConfig, job: JobInfo, config: dict[str, Any]) -> None:
        super().__init__(cfg, job)
        try:
            import wandb
        except ImportError as err:
            raise ConfigError(
                "logger=wandb needs the wandb package: pip install 'keco-flower[tracking]'"
            ) from err
        self.wandb = wandb
        root = Path(cfg.dir) if cfg.dir else job.run_dir
        root.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            silent=True, console="off", x_disable_stats=True, x_disable_machine_info=True,
            disable_git=True, save_code=False, x_save_requirements=False,
        )  # fmt: skip
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, group=cfg.group or job.group,
            name=job.name, dir=str(root), mode=cfg.mode, tags=list(cfg.tags), config=config,
            settings=settings,
        )  # fmt: skip
        self.run.define_metric("round")
        self.run.define_metric("round/*", step_metric="round")

    def _round(self, values: dict[str, float], step: int, run: str | None) -> None:
        data: dict[str, Any] = {_tag("round", k, run): v for k, v in values.items() if k != "round"}
        self.run.log({**data, "round": step})

    def _policies(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        columns, rows = policy_table(policies)
        self.run.log({"policies": self.wandb.Table(columns=columns, data=rows)})
        for row in rows:
            for metric, value in zip(columns[1:], row[1:], strict=True):
                if value is not None:
                    self.run.summary[f"policy/{row[0]}/{metric}"] = value

    def _figures(self, paths: list[Path]) -> None:
        self.run.log({f"figures/{p.stem}": self.wandb.Image(str(p)) for p in paths})

    def _summary(self, summary: dict[str, float]) -> None:
        for key, value in summary.items():
            self.run.summary[f"summary/{key}"] = value

    def close(self) -> None:
        self.run.finish()
        # finish() can return before wandb's service process has written the run file; its
        # teardown waits for that (the next run of a sweep starts a new service)
        self.wandb.teardown()


_active: Tracker | None = None


def make_tracker(raw: Any, job: JobInfo, config: dict[str, Any] | None = None) -> Tracker:
    """The tracker of the ``logger`` config node (validated first; ``None`` means csv)."""
    cfg = logger_from_dict(raw)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.name == "tensorboard":
        return TensorBoardTracker(cfg, job)
    if cfg.name == "wandb":
        return WandbTracker(cfg, job, config or {})
    return Tracker(cfg, job)


@contextlib.contextmanager
def start(raw: Any, job: JobInfo, config: dict[str, Any] | None = None) -> Iterator[Tracker]:
    """Within the block, :func:`active` is this run's tracker; closed at the end."""
    global _active
    tracker = make_tracker(raw, job, config)
    previous, _active = _active, tracker
    try:
        yield tracker
    finally:
        _active = previous
        tracker.close()


def active() -> Tracker | None:
    """The tracker of the run in progress (``None`` outside :func:`start`)."""
    return _active

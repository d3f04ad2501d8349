"""Aggregate a Hydra multirun sweep over seeds into ``summary.csv``, ``summary.md`` and figures.

Usage: ``python -m experiments.report dir=<sweep_dir> [out=<dir>]``; prints the path of
``summary.md`` as its last line. The output directory defaults to the sweep directory.

Input: every ``results.json`` below ``<sweep_dir>`` (any depth; ``.hydra`` directories are not
searched) that has a ``study`` and ``records``::

    {"study": "keco_energy", "seed": 0,
     "config": {..., "experiment": {"report": <plot spec>}},
     "records": [{"method": "keco", "data_scale": 2000, "energy_local": 1.23, ...}, ...]}

Other ``results.json`` files (other tasks) are skipped with a warning on stderr. A job directory
(one holding ``.hydra/``, or a numbered directory right under the sweep) without any
``results.json`` is a failed job; it is listed in ``summary.md``.

The plot spec (``config.experiment.report``; only ``x`` and ``panels`` are required)::

    title: "KECO Fig. 4: energy vs data scale"
    x: data_scale                  # record column on the x axis
    xlabel: "Data scale"           # default: the x column
    group: method                  # column whose values are the lines / bar groups
    facet: null                    # column with one subplot per value (x every panel)
    facet_labels: {cpu: "CPU pressure"}   # display names of facet values
    panels:                        # one subplot per metric (x every facet value)
      - {metric: energy_local, ylabel: "Local energy (J/task)", title: "Local computing"}
    kind: line                     # line: mean ± std band; bar: grouped bars, std error bars
    methods: [keco, ddpg, cnn]     # order and filter of the group values in figure and tables
    labels: {keco: KECO}           # display names of the group values

Aggregation: each (study, group value, facet value, x, metric) cell is averaged over the seeds
(mean, sample standard deviation with ddof=1, 0 for a single value, and n). ``summary.csv`` holds
every numeric record column of every group value (the ``methods`` filter only applies to the
figure and the markdown tables); ``summary.md`` has, per study, the seeds found, the number of
jobs, the failed jobs, one table per plotted metric and facet value, and the figure.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import string
import sys
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig

from common.config import ConfigError
from experiments.cli import hydra_app

# pyplot comes from experiments.figures, which selects the file-only Agg backend before
# importing it; importing matplotlib.pyplot here first would bypass that.
from experiments.figures import MISSING, figure, markdown, number
from experiments.stats import bootstrap_ci

RESULTS = "results.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
CSV_COLUMNS = (
    "study", "method", "facet", "x", "metric", "mean", "std", "ci_low", "ci_high", "n",
    "diff", "diff_low", "diff_high",
)  # fmt: skip
CELL = ("metric", "facet", "x", "method")  # what a summary row is the mean over seeds of
BUDGET_COLUMNS = ("episodes", "steps", "params", "train_seconds")
KINDS = ("line", "bar")
SIGNIFICANT = 3  # least significant digits of a table's means (integer digits are never cut)
MAX_DECIMALS = 6
TITLE_HEIGHT = 0.4  # inches above the axes for the figure title
LEGEND_ROW_HEIGHT = 0.35  # inches per row of the shared legend
CURVES_HEADER = 0.8  # inches above the curve panels for their legend
LEGEND_COLUMNS = 6
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
MAX_MARKERS = 12  # per line; long time series get markers on every k-th point only
MAX_TICKS = 8  # up to this many numeric x values are all ticked (as the papers do), else auto
HINT = "run `python -m experiments.run -m experiment=<name> seed=0,1` first"


class SweepError(ValueError):
    """The sweep cannot be summarised (duplicate jobs, bad plot spec, ...)."""


@dataclass
class StudyReport:
    """Everything ``write_summary`` needs about one study."""

    name: str
    spec: dict[str, Any]
    jobs: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    figure: Path | None = None
    curves: Path | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _natural_key(path: Path) -> list[Any]:
    """Sort key that puts job ``10/`` after ``9/`` (Hydra numbers jobs without padding)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _below(root: Path, name: str) -> list[Path]:
    """Every ``name`` below ``root`` outside ``.hydra`` directories (Hydra's saved configs)."""
    return [p for p in root.rglob(name) if ".hydra" not in p.parent.relative_to(root).parts]


def _results_files(root: Path) -> list[Path]:
    return sorted(_below(root, RESULTS), key=_natural_key)


def _job_dir(path: Path, root: Path) -> Path:
    """The Hydra job directory of a file: its nearest ancestor holding ``.hydra/`` (or parent)."""
    for parent in path.parents:
        if (parent / ".hydra").is_dir():
            return parent
        if parent == root:
            break
    return path.parent


def _overrides(job_dir: Path) -> list[str]:
    """The job's command-line overrides from ``.hydra/overrides.yaml`` ([] if unreadable)."""
    try:
        loaded = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text("utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    return [str(item) for item in loaded] if isinstance(loaded, list) else []


def _experiment(overrides: Sequence[str]) -> str | None:
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key == "experiment" and value:
            return value
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def load_sweep(sweep_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Study name -> its jobs, each sorted by seed, from every study ``results.json``.

    A job is the ``results.json`` dict plus ``path`` (the file), ``dir`` (its Hydra job
    directory) and ``overrides`` (from ``.hydra/overrides.yaml``). Files without ``study`` and
    ``records`` are skipped with a warning. Raises :class:`SweepError` when two files hold the
    same study and seed, naming both.
    """
    root = Path(sweep_dir)
    studies: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, Hashable], Path] = {}
    for path in _results_files(root):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            _warn(f"skipping {path}: not readable JSON ({err})")
            continue
        if not isinstance(results, dict) or "study" not in results or "records" not in results:
            _warn(f"skipping {path}: no 'study' and 'records' (not a study's results)")
            continue
        if not isinstance(results["records"], list):
            _warn(f"skipping {path}: 'records' is not a list")
            continue
        study = str(results["study"])
        config = results.get("config") if isinstance(results.get("config"), dict) else {}
        seed = results.get("seed", config.get("seed"))
        if seed is None or isinstance(seed, dict | list):
            _warn(f"skipping {path}: no 'seed'")
            continue
        if (study, seed) in seen:
            raise SweepError(
                f"duplicate results for study {study!r} seed {seed}: {seen[study, seed]} and {path}"
            )
        seen[study, seed] = path
        job_dir = _job_dir(path, root)
        job = {**results, "study": study, "seed": seed, "config": config}
        job.update(path=path, dir=job_dir, overrides=_overrides(job_dir))
        studies.setdefault(study, []).append(job)
    for jobs in studies.values():
        jobs.sort(key=lambda job: _sort_key(job["seed"]))
    return studies


def find_failed_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Job directories without any ``results.json``: ``{"dir", "overrides"}`` each.

    A job directory is one that holds ``.hydra/`` (Hydra writes it when the job starts), or a
    numbered directory right under the sweep (Hydra's ``subdir: ${hydra.job.num}``).
    """
    root = Path(sweep_dir)
    candidates = {path.parent for path in _below(root, ".hydra") if path.is_dir()}
    candidates |= {p for p in root.iterdir() if p.is_dir() and p.name.isdigit()}
    return [
        {"dir": job_dir, "overrides": _overrides(job_dir)}
        for job_dir in sorted(candidates, key=_natural_key)
        if not _results_files(job_dir)
    ]


# ---- spec and aggregation -------------------------------------------------------------------


def study_spec(jobs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The plot spec of a study (from its first job) with defaults filled in and checked."""
    if not jobs:
        raise SweepError("a study needs at least one job")
    first = jobs[0]
    where = f"study {first['study']!r} ({first.get('path', '?')})"
    experiment = first.get("config", {}).get("experiment")
    raw = experiment.get("report") if isinstance(experiment, dict) else None
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: config.experiment.report (the plot spec) is missing")
    spec = normalise_spec(raw, where)
    for job in jobs[1:]:
        other = (job.get("config", {}).get("experiment") or {}).get("report")
        if other != raw:
            _warn(f"{where}: {job.get('path')} has a different plot spec; using the first one")
    return spec


def normalise_spec(raw: dict[str, Any], where: str = "plot spec") -> dict[str, Any]:
    """``raw`` with every optional key filled in; :class:`SweepError` if it is unusable."""
    if not isinstance(raw.get("x"), str) or not raw["x"]:
        raise SweepError(f"{where}: report.x (the x-axis column) must be a column name")
    panels = raw.get("panels")
    if not isinstance(panels, list) or not panels:
        raise SweepError(f"{where}: report.panels must be a non-empty list of {{metric: ...}}")
    normal_panels = []
    for panel in panels:
        panel = {"metric": panel} if isinstance(panel, str) else panel
        if not isinstance(panel, dict) or not isinstance(panel.get("metric"), str):
            raise SweepError(f"{where}: every report.panels entry needs a 'metric' column name")
        normal_panels.append(panel)
    kind = raw.get("kind") or "line"
    if kind not in KINDS:
        raise SweepError(f"{where}: report.kind must be one of {KINDS}, not {kind!r}")
    methods = raw.get("methods")
    if methods is not None and not isinstance(methods, list):
        raise SweepError(f"{where}: report.methods must be a list")
    return {
        "title": raw.get("title"),
        "x": raw["x"],
        "xlabel": raw.get("xlabel") or raw["x"],
        "group": raw.get("group") or "method",
        "facet": raw.get("facet") or None,
        "facet_labels": dict(raw.get("facet_labels") or {}),
        "panels": normal_panels,
        "kind": kind,
        "methods": [str(m) for m in methods] if methods is not None else None,
        "labels": {str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
        "reference": str(raw["reference"]) if raw.get("reference") else None,
        "curves": _curves_spec(raw.get("curves"), where),
        "compare": str(raw["compare"]) if raw.get("compare") else None,
    }


def _curves_spec(raw: Any, where: str) -> dict[str, Any] | None:
    """``report.curves``: a per-round curve figure from the jobs' ``rounds`` rows."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("x"), str) or not raw.get("y"):
        raise SweepError(f"{where}: report.curves needs x and y (round-row columns)")
    return {
        "x": raw["x"], "y": str(raw["y"]), "xlabel": raw.get("xlabel") or raw["x"],
        "ylabel": raw.get("ylabel") or raw["y"], "cumulative": bool(raw.get("cumulative", True)),
    }  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers before everything else, numbers by value, the rest by text."""
    return (0, value) if _is_number(value) else (1, str(value))


def _key(value: Any) -> Hashable:
    """``value`` usable as a dict key: JSON lists and objects become their JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def _axis_order(values: Iterable[Any]) -> list[Any]:
    """Distinct values: sorted if all are numbers, else in order of first appearance."""
    distinct = list(dict.fromkeys(values))
    return sorted(distinct) if all(_is_number(v) for v in distinct) else distinct


def _record_values(
    jobs: Sequence[dict[str, Any]], spec: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, dict[Any, int]]]:
    """Every metric value of every record, one row per (job, record, metric): the cell's
    :data:`CELL` columns as codes, ``seed`` and ``value`` (a float, or the record's list of
    per-episode values); and per :data:`CELL` column, each value met -> its code."""
    x_col, group_col, facet_col = spec["x"], spec["group"], spec["facet"]
    keys = {x_col, group_col, facet_col, "seed", "episodes"}
    codes: dict[str, dict[Any, int]] = {column: {} for column in CELL}
    values, skipped = [], 0
    for job in jobs:
        for record in job["records"]:
            if not isinstance(record, dict) or x_col not in record or group_col not in record:
                skipped += 1
                continue
            facet = _key(record.get(facet_col, "")) if facet_col else ""
            where = {"facet": "" if facet is None else facet, "x": _key(record[x_col]),
                     "method": str(record[group_col])}  # fmt: skip
            # codes, not the values: a groupby key may be None, or numbers and text mixed
            cell = {c: codes[c].setdefault(v, len(codes[c])) for c, v in where.items()}
            episodes = record.get("episodes") if isinstance(record.get("episodes"), dict) else {}
            for column, value in record.items():
                if column in keys or number(value) is None:
                    continue
                vector = episodes.get(column)
                vector = [number(v) for v in vector] if isinstance(vector, list) else []
                metric = codes["metric"].setdefault(column, len(codes["metric"]))
                value = vector if vector and None not in vector else number(value)
                values.append({**cell, "metric": metric, "seed": job["seed"], "value": value})
    if skipped:
        study = jobs[0]["study"]
        _warn(f"study {study!r}: {skipped} record(s) without {x_col!r} or {group_col!r} skipped")
    return pd.DataFrame(values, columns=[*CELL, "seed", "value"]), codes


def _matrix(seed_rows: Sequence[np.ndarray]) -> np.ndarray:
    """A cell's [seeds, episodes] matrix; seeds with different episode counts (or scalars) fall
    back to one value each."""
    if len({len(r) for r in seed_rows}) == 1:
        return np.vstack(seed_rows)
    return np.array([[float(np.mean(r))] for r in seed_rows])


def aggregate(
    jobs: Sequence[dict[str, Any]], spec: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rows ``{study, method, facet, x, metric, mean, std, ci_low, ci_high, n, diff, diff_low,
    diff_high}`` over the seeds of one study.

    Every numeric record column except x, group, facet and ``seed`` is a metric; non-finite
    and missing values are left out (``n`` counts the seeds used). A record may carry
    ``episodes: {metric: [one value per held-out episode]}``: the cell is then the seeds ×
    episodes matrix, ``mean`` its mean and ``ci_low``/``ci_high`` the 95 % interval of
    :func:`experiments.stats.bootstrap_ci` (seeds and episodes resampled); without per-episode
    values the seeds alone are resampled. ``std`` is the sample standard deviation (ddof=1) of
    the per-seed means, 0 for one seed. ``diff`` (with its interval) is the paired difference
    to the reference method (``report.reference``, default ``greedy`` when the study has it)
    on the same seeds and episodes; ``None`` for the reference itself or without it. Rows come
    metric by metric (plotted metrics first), then facet, x (numbers sorted, text in order of
    appearance), group value (``spec.methods`` first, then the others in order of appearance);
    ``facet`` is "" without a facet column.
    """
    if not jobs:
        return []
    spec = normalise_spec(spec) if spec is not None else study_spec(jobs)
    frame, codes = _record_values(jobs, spec)
    # cell -> seed -> that seed's records averaged (episode by episode), seeds in job order
    cells: dict[tuple[int, ...], dict[Any, np.ndarray]] = {}
    for (*cell, seed), values in frame.groupby([*CELL, "seed"], sort=False)["value"]:
        matrix = np.atleast_2d(np.asarray(values.tolist(), dtype=float))
        cells.setdefault(tuple(cell), {})[seed] = np.mean(matrix, axis=0)

    plotted = [panel["metric"] for panel in spec["panels"]]
    wanted = spec["methods"] or []
    metrics, methods = codes["metric"], codes["method"]
    order = {
        "metric": [m for m in plotted if m in metrics] + [m for m in metrics if m not in plotted],
        "facet": _axis_order(codes["facet"]),
        "x": _axis_order(codes["x"]),
        "method": [m for m in wanted if m in methods] + [m for m in methods if m not in wanted],
    }
    reference = spec["reference"] or ("greedy" if "greedy" in methods else None)
    study = str(jobs[0]["study"])
    rows = []
    for key in itertools.product(*(order[c] for c in CELL)):
        code = tuple(codes[c][v] for c, v in zip(CELL, key, strict=True))
        cell = cells.get(code)
        if not cell:
            continue
        metric, facet, x, method = key
        values = _matrix(list(cell.values()))
        seed_means = values.mean(1)
        mean, low, high = bootstrap_ci(values)
        row = dict(
            study=study, method=method, facet=facet, x=x, metric=metric, mean=mean,
            std=float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else 0.0,
            ci_low=low, ci_high=high, n=len(seed_means), diff=None, diff_low=None, diff_high=None,
        )  # fmt: skip
        ref_cell = cells.get((*code[:3], methods[reference])) if reference in methods else None
        common = [seed for seed in cell if ref_cell and seed in ref_cell]
        if method != reference and common:
            mine = _matrix([cell[s] for s in common])
            ref = _matrix([ref_cell[s] for s in common])
            if mine.shape == ref.shape:
                diff = bootstrap_ci(mine - ref)
                row.update(diff=diff[0], diff_low=diff[1], diff_high=diff[2])
        rows.append(row)
    return rows


def budgets(jobs: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per trained method (the index), the mean over seeds of its training budget
    (``results.json``'s ``methods``): episodes simulated, optimiser steps, parameters and
    training seconds (NaN where never recorded), and its ``note``."""
    frame = pd.DataFrame(
        [
            {"method": method, **{k: number(info.get(k)) for k in BUDGET_COLUMNS},
             "note": info["note"] if isinstance(info.get("note"), str) else None}
            for job in jobs
            for method, info in (job.get("methods") or {}).items()
            if isinstance(info, dict)
        ],
        columns=["method", *BUDGET_COLUMNS, "note"],
    )  # fmt: skip
    # a method is listed once it has a number, in the order its first number came
    numbers = frame.dropna(subset=list(BUDGET_COLUMNS), how="all")
    means = numbers.groupby("method", sort=False)[list(BUDGET_COLUMNS)].mean()
    notes = frame.dropna(subset=["note"]).groupby("method", sort=False)["note"].last()
    return means.assign(note=notes.reindex(means.index).fillna(""))


# ---- figure ---------------------------------------------------------------------------------


def _grid(n_panels: int, n_facets: int) -> tuple[int, int]:
    """Rows and columns of subplots: panels x facets, else one row of up to 3, else 2x2, ..."""
    if n_panels > 1 and n_facets > 1:
        return n_panels, n_facets
    n = n_panels * n_facets
    if n <= 3:
        return 1, n
    if n == 4:
        return 2, 2
    return math.ceil(n / 3), 3


def _text(value: Any) -> str:
    """A value as table/CSV text; 2000.0 reads as 2000 (JSON round trips may add the .0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _letter(index: int) -> str:
    letters = string.ascii_lowercase
    return (
        letters[index]
        if index < len(letters)
        else f"{letters[index // 26 - 1]}{letters[index % 26]}"
    )


def _subplots(spec: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per subplot, panel-major: letter, panel, facet value and heading text."""
    facets = _axis_order(row["facet"] for row in rows) or [""]
    out = []
    for panel, facet in itertools.product(spec["panels"], facets):
        parts = []
        if panel.get("title") or len(spec["panels"]) > 1 or facet == "":
            parts.append(str(panel.get("title") or panel.get("ylabel") or panel["metric"]))
        if facet != "":
            parts.append(spec["facet_labels"].get(facet) or f"{spec['facet']} = {_text(facet)}")
        out.append({"letter": _letter(len(out)), "panel": panel, "facet": facet,
                    "heading": ", ".join(parts)})  # fmt: skip
    return out


def _methods(spec: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    """The group values shown: ``spec.methods`` (those with data) or all, by appearance."""
    present = list(dict.fromkeys(row["method"] for row in rows))
    if spec["methods"] is None:
        return present
    return [m for m in spec["methods"] if m in present]


def plot_study(rows: Sequence[dict[str, Any]], spec: dict[str, Any], path: Path) -> Path:
    """Draw one study's figure (panels x facets subplots, shared legend) into ``path``.

    ``rows`` are :func:`aggregate`'s rows of that study; ``spec`` its plot spec (raw or
    normalised). Lines show the mean with its 95 % interval as a band; bars show the mean with
    the interval as error bars.
    """
    spec = normalise_spec(spec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    methods = _methods(spec, rows)
    style = {m: (f"C{i % 10}", MARKERS[i % len(MARKERS)]) for i, m in enumerate(methods)}
    subplots = _subplots(spec, rows)
    nrows, ncols = _grid(len(spec["panels"]), len(subplots) // len(spec["panels"]))
    # Room above the axes for the title and the shared legend, in inches.
    legend_rows = math.ceil(len(methods) / LEGEND_COLUMNS) if methods else 0
    title = TITLE_HEIGHT if spec["title"] else 0.0
    header = title + LEGEND_ROW_HEIGHT * legend_rows
    index = {(r["metric"], r["facet"], r["method"], r["x"]): r for r in rows}
    handles: dict[str, Any] = {}
    with figure(path, nrows, ncols, len(subplots), header) as (fig, axes):
        for ax, sub in zip(axes, subplots, strict=False):
            handles.update(_draw_subplot(ax, sub, rows, index, spec, methods, style))
        height = fig.get_figheight()
        if spec["title"]:
            # fig.text, not suptitle: tight_layout would reserve room for a suptitle above rect.
            fig.text(0.5, 1 - 0.08 / height, spec["title"], ha="center", va="top",
                     fontsize="large")  # fmt: skip
        if handles:
            ordered = [m for m in methods if m in handles]
            fig.legend(
                [handles[m] for m in ordered], [spec["labels"].get(m, m) for m in ordered],
                loc="upper center", ncol=min(len(ordered), LEGEND_COLUMNS), frameon=False,
                bbox_to_anchor=(0.5, 1 - title / height),
            )  # fmt: skip
    return path


def _draw_subplot(
    ax: Any, sub: dict[str, Any], rows: Sequence[dict[str, Any]], index: dict[tuple, dict],
    spec: dict[str, Any], methods: Sequence[str], style: dict[str, tuple[str, str]],
) -> dict[str, Any]:  # fmt: skip
    """One subplot of :func:`plot_study`; returns its legend handles by method."""
    metric, facet = sub["panel"]["metric"], sub["facet"]
    cell_rows = [r for r in rows if r["metric"] == metric and r["facet"] == facet]
    xs = _axis_order(r["x"] for r in cell_rows)
    numeric = all(_is_number(x) for x in xs)
    handles = {}
    for position, method in enumerate(methods):
        points = [
            index[metric, facet, method, x] for x in xs if (metric, facet, method, x) in index
        ]
        if not points:
            continue
        label, (colour, marker) = spec["labels"].get(method, method), style[method]
        means = np.array([p["mean"] for p in points])
        lows = np.array([p["ci_low"] for p in points])
        highs = np.array([p["ci_high"] for p in points])
        if spec["kind"] == "bar":
            bar_width = 0.8 / len(methods)
            offset = (position - (len(methods) - 1) / 2) * bar_width
            where = [xs.index(p["x"]) + offset for p in points]
            handles[method] = ax.bar(
                where, means, bar_width, yerr=np.vstack([means - lows, highs - means]),
                capsize=3, color=colour, label=label,
            )  # fmt: skip
        else:
            where = [p["x"] if numeric else xs.index(p["x"]) for p in points]
            (handles[method],) = ax.plot(
                where, means, marker=marker, color=colour, label=label,
                markevery=max(1, math.ceil(len(points) / MAX_MARKERS)), markersize=5,
            )  # fmt: skip
            ax.fill_between(where, lows, highs, color=colour, alpha=0.18, linewidth=0)
    if spec["kind"] == "bar" or not numeric:
        ax.set_xticks(range(len(xs)), [_text(x) for x in xs])
    elif len(xs) <= MAX_TICKS:
        ax.set_xticks(xs, [_text(x) for x in xs])  # the measured x values, like the papers
    if not cell_rows:
        ax.text(0.5, 0.5, f"no data for {metric}", ha="center", va="center",
                transform=ax.transAxes, color="grey")  # fmt: skip
    ax.set_title(f"({sub['letter']}) {sub['heading']}")
    ax.set_xlabel(spec["xlabel"])
    ax.set_ylabel(sub["panel"].get("ylabel") or metric)
    ax.grid(alpha=0.3, axis="y" if spec["kind"] == "bar" else "both")
    return handles


def curve_points(
    jobs: Sequence[dict[str, Any]], spec: dict[str, Any]
) -> dict[tuple[Any, str], tuple[np.ndarray, np.ndarray]]:
    """Per (sweep x value, method): the mean over seeds of the curve's x (summed over rounds
    when ``cumulative``) and y at every round, from the jobs' ``rounds`` rows."""
    curves, x_col = spec["curves"], spec["x"]
    runs: dict[tuple[Any, str], list[tuple[list[float], list[float]]]] = {}
    for job in jobs:
        per_run: dict[tuple[Any, str], list[dict[str, Any]]] = {}
        for row in job.get("rounds") or []:
            if isinstance(row, dict) and "method" in row:
                per_run.setdefault((_key(row.get(x_col, "")), str(row["method"])), []).append(row)
        for key, rows in per_run.items():
            rows = sorted(rows, key=lambda r: number(r.get("round")) or 0)
            xs = [number(r.get(curves["x"])) or 0.0 for r in rows]
            ys = [number(r.get(curves["y"])) for r in rows]
            if any(y is None for y in ys):
                continue
            xs = list(np.cumsum(xs)) if curves["cumulative"] else xs
            runs.setdefault(key, []).append((xs, ys))
    out = {}
    for key, series in runs.items():
        length = min(len(x) for x, _ in series)
        xs = np.mean([x[:length] for x, _ in series], axis=0)
        ys = np.mean([y[:length] for _, y in series], axis=0)
        out[key] = (xs, ys)
    return out


def plot_curves(jobs: Sequence[dict[str, Any]], spec: dict[str, Any], path: Path) -> Path | None:
    """One panel per sweep value: every method's per-round ``curves.y`` against ``curves.x``
    (e.g. QoE against simulated wall-clock time), mean over the seeds. ``None`` without data."""
    spec = normalise_spec(spec)
    if spec["curves"] is None:
        return None
    points = curve_points(jobs, spec)
    if not points:
        return None
    values = _axis_order(x for x, _ in points)
    methods = [m for m in (spec["methods"] or []) if any(k[1] == m for k in points)]
    methods += [m for _, m in points if m not in methods]
    colour = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(methods))}
    cols = min(len(values), 4)
    rows = math.ceil(len(values) / cols)
    handles = {}
    with figure(Path(path), rows, cols, len(values), CURVES_HEADER) as (fig, axes):
        for i, (ax, value) in enumerate(zip(axes, values, strict=False)):
            for method in dict.fromkeys(methods):
                if (value, method) not in points:
                    continue
                label = spec["labels"].get(method, method)
                (handles[method],) = ax.plot(*points[value, method], marker="o", markersize=3,
                                             color=colour[method], label=label)  # fmt: skip
            ax.set_title(f"({_letter(i)}) {spec['xlabel']} = {_text(value)}")
            ax.set_xlabel(spec["curves"]["xlabel"])
            ax.set_ylabel(spec["curves"]["ylabel"])
            ax.grid(alpha=0.3)
        labels = [spec["labels"].get(m, m) for m in handles]
        fig.legend(list(handles.values()), labels, loc="upper center",
                   ncol=min(len(handles), LEGEND_COLUMNS), frameon=False)  # fmt: skip
    return Path(path)


# ---- summary --------------------------------------------------------------------------------


def table_decimals(means: Iterable[float]) -> int:
    """Decimals that give every mean at least SIGNIFICANT significant digits (0 to 6).

    One count per table keeps a column's numbers aligned, as in the papers' tables.
    """
    smallest = min((abs(m) for m in means if m != 0 and math.isfinite(m)), default=None)
    if smallest is None:
        return SIGNIFICANT - 1
    integer_digits = math.floor(math.log10(smallest)) + 1
    return min(MAX_DECIMALS, max(0, SIGNIFICANT - integer_digits))


def format_interval(
    mean: float, low: float, high: float, decimals: int | None = None, n: int | None = None,
    seeds: int = 0,
) -> str:  # fmt: skip
    """``"1.50 [0.90, 2.10]"``, by default with :func:`table_decimals` of the mean alone.

    A cell over ``n`` seeds says so when that is fewer than the study's ``seeds`` (not silently
    mixed in), and is ``"1.50 (n=1)"`` when one value left nothing to resample.
    """
    decimals = table_decimals([mean]) if decimals is None else decimals
    if n == 1 and low == high:
        return f"{mean:.{decimals}f} (n=1)"
    flag = f" (n={n})" if n is not None and n < seeds else ""
    return f"{mean:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]{flag}"


def _failed_text(failed: dict[str, Any], root: Path | None) -> str:
    name = _relative(failed["dir"], root) if root else str(failed["dir"])
    overrides = " ".join(failed["overrides"])
    return f"`{name}`" + (f" ({overrides})" if overrides else "")


def _by_x(cells: pd.DataFrame, texts: Sequence[str], spec: dict[str, Any],
          methods: Sequence[str]) -> list[str]:  # fmt: skip
    """A markdown table of ``texts`` (one per row of ``cells``): a row per x value in axis
    order, a column per method, ``–`` where a method has no cell."""
    text = dict(zip(zip(cells["x"], cells["method"], strict=True), texts, strict=True))
    table = pd.DataFrame(
        [[_text(x), *(text.get((x, m), MISSING) for m in methods)]
         for x in _axis_order(cells["x"])],
        columns=[spec["xlabel"], *(spec["labels"].get(m, m) for m in methods)],
    )  # fmt: skip
    return markdown(table)


def _study_tables(report: StudyReport) -> list[str]:
    spec = normalise_spec(report.spec)
    rows = pd.DataFrame(report.rows, columns=list(CSV_COLUMNS), dtype=object)
    methods = _methods(spec, report.rows)
    lines = []
    for sub in _subplots(spec, report.rows):
        metric, facet = sub["panel"]["metric"], sub["facet"]
        cells = rows[(rows["metric"] == metric) & (rows["facet"] == facet)]
        column = "" if sub["heading"].startswith(metric) else f" (`{metric}`)"
        lines += [f"### ({sub['letter']}) {sub['heading']}{column}", ""]
        if cells.empty:
            lines += [f"No values of `{metric}` in the records.", ""]
            continue
        decimals = table_decimals(cells["mean"])
        texts = [format_interval(r["mean"], r["ci_low"], r["ci_high"], decimals, r["n"],
                                 len(report.jobs)) for r in cells.to_dict("records")]  # fmt: skip
        lines += [*_by_x(cells, texts, spec, methods), ""]
    lines += _difference_table(spec, rows, methods)
    lines += _budget_table(spec, report.jobs)
    return lines


def _difference_table(
    spec: dict[str, Any], rows: pd.DataFrame, methods: Sequence[str]
) -> list[str]:
    """The paired differences to the reference method for the ``compare`` metric."""
    with_diff = rows[rows["diff"].notna()]
    if with_diff.empty:
        return []
    metric = spec["compare"] or ("qoe" if (with_diff["metric"] == "qoe").any() else None)
    metric = metric or spec["panels"][0]["metric"]
    chosen = with_diff[with_diff["metric"] == metric]
    if chosen.empty:
        return []
    reference = spec["reference"] or "greedy"
    shown = [m for m in methods if m in set(chosen["method"])]
    decimals = table_decimals(abs(d) for d in chosen["diff"])
    lines = []
    for facet in _axis_order(chosen["facet"]):
        title = f"Paired difference to `{reference}` in `{metric}`"
        if facet != "":
            name = spec["facet_labels"].get(facet) or f"{spec['facet']} = {_text(facet)}"
            title += f", {name}"
        lines += [f"### {title}", ""]
        lines += [
            "Mean of (method − reference) on the same seeds and held-out episodes, with its 95 % "
            "interval; an interval that excludes 0 separates the two.",
            "",
        ]
        cells = chosen[chosen["facet"] == facet]
        texts = [format_interval(r["diff"], r["diff_low"], r["diff_high"], decimals)
                 for r in cells.to_dict("records")]  # fmt: skip
        lines += [*_by_x(cells, texts, spec, shown), ""]
    return lines


def _budget_table(spec: dict[str, Any], jobs: Sequence[dict[str, Any]]) -> list[str]:
    """What every trained method simulated and how many optimiser steps it took."""
    means = budgets(jobs)
    if means.empty:
        return []
    lines = ["### Training budget", ""]
    lines += [
        "Mean over the seeds: episodes simulated and optimiser steps of every trained method "
        "(a federation: all its clients together).",
        "",
    ]
    table = means[list(BUDGET_COLUMNS)].map(lambda v: MISSING if pd.isna(v) else f"{v:,.0f}")
    table.insert(0, "method", [spec["labels"].get(m, m) for m in means.index])
    table["note"] = means["note"]
    table.columns = ["method", "episodes", "optimiser steps", "parameters", "seconds", "note"]
    return [*lines, *markdown(table), ""]


def write_csv(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    """Write aggregate rows as ``summary.csv`` (columns :data:`CSV_COLUMNS`, floats exact)."""
    table = pd.DataFrame(list(rows), columns=list(CSV_COLUMNS), dtype=object)
    table[["facet", "x"]] = table[["facet", "x"]].map(_text)
    floats = ["mean", "std", "ci_low", "ci_high", "diff", "diff_low", "diff_high"]
    table[floats] = table[floats].map(lambda v: "" if v is None else repr(v))
    # csv.writer's line ends, as summary.csv always had
    table.to_csv(path, index=False, lineterminator="\r\n")
    return Path(path)


def write_summary(
    reports: Sequence[StudyReport],
    out_dir: Path,
    *,
    sweep_dir: Path | None = None,
    unassigned: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write ``summary.csv`` and ``summary.md`` for ``reports`` into ``out_dir``; return the md.

    ``unassigned`` are failed jobs (:func:`find_failed_jobs`) that belong to no known study.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv((row for report in reports for row in report.rows), out_dir / SUMMARY_CSV)

    lines = ["# Sweep summary", ""]
    if sweep_dir is not None:
        lines += [f"Sweep: `{sweep_dir}`", ""]
    lines += [
        "Cells are the mean over seeds and held-out episodes with its 95 % bootstrap interval "
        "[low, high] (seeds and episodes resampled: `experiments.stats`); a cell over fewer "
        "seeds than the study has says its n. Every numeric metric, with the sample standard "
        f"deviation over seeds, is in `{SUMMARY_CSV}`.",
        "",
    ]
    for report in reports:
        title = report.spec.get("title")
        lines += [f"## {report.name}" + (f": {title}" if title else ""), ""]
        seeds = ", ".join(_text(job["seed"]) for job in report.jobs)
        lines += [f"- seeds: {seeds}", f"- jobs: {len(report.jobs)}"]
        if report.failed:
            failed = ", ".join(_failed_text(f, sweep_dir) for f in report.failed)
            lines.append(f"- jobs without results: {failed}")
        plotted = {panel["metric"] for panel in report.spec["panels"]}
        others = list(dict.fromkeys(r["metric"] for r in report.rows if r["metric"] not in plotted))
        if others:
            lines.append(f"- other metrics (in `{SUMMARY_CSV}` only): {', '.join(others)}")
        lines.append("")
        lines += _study_tables(report)
        if report.figure is not None:
            lines += [f"![]({_relative(report.figure, out_dir)})", ""]
        if report.curves is not None:
            curves = normalise_spec(report.spec)["curves"]
            lines += [
                f"### {curves['ylabel']} against {curves['xlabel'].lower()}", "",
                "Per round, mean over the seeds" + (" (x summed over the rounds)." if
                curves["cumulative"] else "."), "",
                f"![]({_relative(report.curves, out_dir)})", "",
            ]  # fmt: skip
    if unassigned:
        lines += ["## Jobs without results", ""]
        lines += [f"- {_failed_text(f, sweep_dir)}" for f in unassigned] + [""]

    path = out_dir / SUMMARY_MD
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _assign_failed(
    reports: Sequence[StudyReport], failed: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Attach failed jobs to studies by their ``experiment=`` override; return the others.

    With a single study, a failed job without an ``experiment=`` override is taken to be one of
    its jobs (the experiment was then fixed by the config, not swept).
    """
    by_experiment = {}
    for report in reports:
        for job in report.jobs:
            experiment = _experiment(job["overrides"])
            if experiment:
                by_experiment.setdefault(experiment, report)
    unassigned = []
    for job in failed:
        experiment = _experiment(job["overrides"])
        report = by_experiment.get(experiment) if experiment else None
        if report is None and experiment is None and len(reports) == 1:
            report = reports[0]
        if report is None:
            unassigned.append(job)
        else:
            report.failed.append(job)
    return unassigned


def _file_name(study: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", study) + ".png"


def summarise(sweep_dir: Path, out_dir: Path) -> Path:
    """Summarise the sweep in ``sweep_dir`` into ``out_dir``; return ``summary.md``'s path.

    Raises :class:`SweepError` when there is nothing (or nothing valid) to summarise.
    """
    if not sweep_dir.is_dir():
        raise SweepError(f"{sweep_dir} is not a directory; {HINT}")
    studies = load_sweep(sweep_dir)
    if not studies:
        raise SweepError(
            f"no study results.json under {sweep_dir} (expected results.json files with "
            f"'study', 'seed', 'config' and 'records'): {HINT}"
        )
    reports = []
    for name, jobs in studies.items():
        spec = study_spec(jobs)
        rows = aggregate(jobs, spec)
        if not rows:
            _warn(f"study {name!r}: no numeric metric in any record")
        report = StudyReport(name=name, spec=spec, jobs=jobs, rows=rows)
        report.figure = plot_study(rows, spec, out_dir / _file_name(name))
        report.curves = plot_curves(jobs, spec, out_dir / _file_name(f"{name}_curves"))
        reports.append(report)
    unassigned = _assign_failed(reports, find_failed_jobs(sweep_dir))
    return write_summary(reports, out_dir, sweep_dir=sweep_dir, unassigned=unassigned)


@hydra_app("report")
def main(cfg: DictConfig) -> Path:
    """``python -m experiments.report dir=<sweep dir> [out=<dir>]`` (``conf/report.yaml``):
    summarise the sweep and print (and return) the path of ``summary.md``. Nothing usable (no
    directory, no study results, a bad plot spec) exits with code 2."""
    sweep_dir = Path(str(cfg.dir))
    out_dir = sweep_dir if cfg.out is None else Path(str(cfg.out))
    try:
        summary = summarise(sweep_dir, out_dir)
    except SweepError as err:
        raise ConfigError(str(err)) from err
    print(summary)
    return summary


if __name__ == "__main__":
    main()

"""Turn a run's ``results.json`` (DESIGN §8) into ``report.md`` with PNG figures next to it.

Usage: ``python -m experiments.figures dir=<run_dir>`` rereads ``<run_dir>/results.json``, rewrites
``<run_dir>/report.md`` and its figures, and prints the report path.

Every key is optional: a metric missing from every round gets no panel and no table column, and
``None``/NaN values are left out of plots and shown as ``–`` in tables, so partial or older
results files still give a report.

The markdown table writer (:func:`markdown`) and the figure helper (:func:`figure`) also make
the sweep summaries of :mod:`experiments.report`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from statistics import fmean
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; must precede the pyplot import so no display is needed

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from tabulate import DataRow, TableFormat  # noqa: E402

from common.config import ConfigError
from experiments.cli import hydra_app  # noqa: E402

MISSING = "–"
HIGHLIGHT_COLOUR = "tab:orange"
OTHER_COLOUR = "tab:blue"
DPI = 120
PANEL_SIZE = (4.6, 3.6)  # inches per subplot

# KECO's client sets (DESIGN §5): x on time, u late with stale logits, v late with fresh logits.
SET_LABELS = {
    "set_x": "x: on time",
    "set_u": "u: late, stale",
    "set_v": "v: late, fresh",
}
POLICY_PANELS = (
    ("qoe", "QoE per task (higher is better)", "{:.2f}"),
    ("drop_ratio", "Drop ratio (lower is better)", "{:.3f}"),
)
BYTE_LABELS = {"bytes_up": "up (clients → server)", "bytes_down": "down (server → clients)"}
ROUND_PANELS = (
    ("eval_qoe", "Evaluation QoE", "QoE per task (higher is better)"),
    ("eval_drop_ratio", "Evaluation drop ratio", "dropped / all tasks"),
)

# tabulate's "pipe" table without its column padding: the cells stay as the reports wrote them.
MARKDOWN = TableFormat(
    lineabove=None, linebelowheader=lambda widths, _: "|" + "---|" * len(widths),
    linebetweenrows=None, linebelow=None, headerrow=DataRow("| ", " | ", " |"),
    datarow=DataRow("| ", " | ", " |"), padding=0, with_header_hide=None,
)  # fmt: skip


def number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is missing, NaN, infinite or not numeric."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def markdown(table: pd.DataFrame) -> list[str]:
    """``table`` as markdown lines: its columns as the header, its cells as they are."""
    return table.to_markdown(
        index=False, tablefmt=MARKDOWN, stralign=None, numalign=None, disable_numparse=True
    ).split("\n")


@contextmanager
def figure(
    path: Path, nrows: int = 1, ncols: int = 1, used: int | None = None,
    header: float | None = None, size: tuple[float, float] = PANEL_SIZE, **subplots: Any,
) -> Iterator[tuple[plt.Figure, list[plt.Axes]]]:  # fmt: skip
    """The one figure helper: ``nrows`` x ``ncols`` panels of ``size`` inches, ``header`` inches
    above them for a title and a shared legend, the panels after the first ``used`` hidden;
    laid out, written to ``path`` at :data:`DPI` and closed when the ``with`` block ends."""
    height = size[1] * nrows + (header or 0.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, height), squeeze=False,
                             **subplots)  # fmt: skip
    try:
        flat = list(axes.flat)
        for ax in flat[used:] if used is not None else []:
            ax.set_visible(False)
        yield fig, flat
        # No rect without a header: tight_layout makes a second layout pass whenever it gets one.
        fig.tight_layout(rect=None if header is None else (0, 0, 1, 1 - header / height))
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


# ---- figures ---------------------------------------------------------------------------------


def _round_numbers(rounds: Sequence[dict]) -> pd.DataFrame:
    """The rounds' finite numbers (NaN for anything else); ``round`` falls back to the row's
    1-based position."""
    frame = pd.DataFrame(list(rounds), dtype=object).map(number).astype(float)
    position = pd.Series(range(1, len(frame) + 1), dtype=float)
    frame["round"] = frame.get("round", position).fillna(position).astype(int)
    return frame


def _series(frame: pd.DataFrame, key: str) -> tuple[list[int], list[float]]:
    """Round numbers and values of ``key``, only where the value is a finite number."""
    valid = frame[key].notna()
    return frame.loc[valid, "round"].tolist(), frame.loc[valid, key].tolist()


def plot_rounds(rounds: list[dict], out_dir: Path) -> list[Path]:
    """Write the per-round figures into ``out_dir`` and return the paths written.

    ``rounds_qoe.png``: evaluation QoE and drop ratio per round, plus the stacked sizes of the
    client sets x/u/v when the rounds carry them. ``rounds_bytes.png``: bytes uploaded and
    downloaded per round. A panel whose key is in no round is left out; a figure with no panel
    is not written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = _round_numbers(rounds)
    present = {key for row in rounds for key in row}
    line_panels = [panel for panel in ROUND_PANELS if panel[0] in present]
    set_keys = [key for key in SET_LABELS if key in present]
    byte_keys = [key for key in ("bytes_up", "bytes_down") if key in present]
    # Every panel spans all rounds, so a round missing from one metric still lines up.
    span = (frame["round"].min() - 0.5, frame["round"].max() + 0.5) if len(frame) else (0.5, 1.5)
    written = []
    if line_panels or set_keys:
        written.append(out_dir / "rounds_qoe.png")
        with figure(written[-1], 1, len(line_panels) + bool(set_keys)) as (_, axes):
            for ax, (key, title, ylabel) in zip(axes, line_panels, strict=False):
                ax.plot(*_series(frame, key), marker="o", color=OTHER_COLOUR)
                _round_axis(ax, title, ylabel, span)
            if set_keys:
                _plot_sets(axes[-1], rounds, frame, set_keys, span)
    if byte_keys:
        series = {key: _series(frame, key) for key in byte_keys}
        largest = max((max(ys) for _, ys in series.values() if ys), default=0.0)
        # decimal units that keep the largest value readable
        divisor, unit = (1e6, "MB = 10⁶ bytes") if largest >= 1e6 else (1e3, "kB = 10³ bytes")
        written.append(out_dir / "rounds_bytes.png")
        with figure(written[-1], size=(6.0, 3.6)) as (_, (ax,)):
            for key, (xs, ys) in series.items():
                ax.plot(xs, [y / divisor for y in ys], marker="o", label=BYTE_LABELS[key])
            _round_axis(ax, "Traffic per round", f"bytes per round ({unit})", span)
            ax.set_ylim(bottom=0)
            ax.legend(fontsize="small")
    return written


def _round_axis(ax: plt.Axes, title: str, ylabel: str, span: tuple[float, float]) -> None:
    ax.set_title(title)
    ax.set_xlim(*span)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)


def _plot_sets(
    ax: plt.Axes, rounds: Sequence[dict], frame: pd.DataFrame, set_keys: Sequence[str],
    span: tuple[float, float],
) -> None:  # fmt: skip
    """Stacked bars of the set sizes; a round is drawn if it has any set key (missing ones = 0)."""
    drawn = frame[[any(key in row for key in set_keys) for row in rounds]]
    bottom = [0.0] * len(drawn)
    for key in set_keys:
        heights = drawn[key].fillna(0.0).tolist()
        ax.bar(drawn["round"].tolist(), heights, bottom=bottom, label=SET_LABELS[key])
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    _round_axis(ax, "Client sets per round", "clients", span)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, max(bottom, default=1.0) * 1.25 or 1.0)  # headroom for the legend row
    ax.legend(loc="upper center", ncol=len(set_keys), fontsize="small")


def _sorted_by_qoe(policies: dict[str, dict]) -> list[str]:
    """Policy names by QoE, best first; policies without a QoE go last, in name order."""

    def key(name: str) -> tuple[bool, float, str]:
        qoe = number(policies[name].get("qoe"))
        return (qoe is None, -(qoe or 0.0), name)

    return sorted(policies, key=key)


def plot_policies(policies: dict[str, dict], out_dir: Path, highlight: str | None = None) -> Path:
    """Write ``policies.png``: horizontal bars of QoE and drop ratio per policy, best QoE on top.

    The ``highlight`` policy (usually the trained student) is drawn in a distinct colour.
    """
    if not policies:
        raise ValueError("plot_policies needs at least one policy; results['policies'] is empty")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = _sorted_by_qoe(policies)[::-1]  # barh draws the first bar at the bottom
    colours = [HIGHLIGHT_COLOUR if name == highlight else OTHER_COLOUR for name in names]
    path = out_dir / "policies.png"
    size = (5.0, max(2.5, 0.42 * len(names) + 1.2))
    with figure(path, 1, 2, size=size, sharey=True) as (_, axes):
        for ax, (key, title, fmt) in zip(axes, POLICY_PANELS, strict=True):
            values = [number(policies[name].get(key)) for name in names]
            bars = ax.barh(range(len(names)), [v or 0.0 for v in values], color=colours)
            ax.bar_label(
                bars, labels=[MISSING if v is None else fmt.format(v) for v in values], padding=3,
                fontsize="small",
            )  # fmt: skip
            ax.set_title(title)
            ax.axvline(0.0, color="black", linewidth=0.8)
            ax.grid(axis="x", alpha=0.3)
            ax.margins(x=0.18)
        axes[0].set_yticks(range(len(names)), names)
        for tick, name in zip(axes[0].get_yticklabels(), names, strict=True):
            if name == highlight:
                tick.set_fontweight("bold")
    return path


# ---- report ----------------------------------------------------------------------------------


def _integer(value: float) -> str:
    return f"{round(value):,}"


# Column name → formatter, in table order (ratios/losses 3 decimals, QoE 2, bytes with
# thousands separators, seconds 1 decimal, energy in J per task 3 decimals).
ROUND_COLUMNS: dict[str, Callable[[float], str]] = {
    "round": _integer, "train_loss": "{:.3f}".format, "eval_qoe": "{:.2f}".format,
    "eval_drop_ratio": "{:.3f}".format, "set_x": _integer, "set_u": _integer, "set_v": _integer,
    "bytes_up": _integer, "bytes_down": _integer, "seconds": "{:.1f}".format,
}  # fmt: skip
POLICY_COLUMNS: dict[str, Callable[[float], str]] = {
    "qoe": "{:.2f}".format, "drop_ratio": "{:.3f}".format, "delay": "{:.2f}".format,
    "energy_total": "{:.3f}".format, "params": _integer, "infer_us": "{:.1f}".format,
}  # fmt: skip


def _cell(value: Any, formatter: Callable[[float], str]) -> str:
    value_number = number(value)
    if value_number is not None:
        return formatter(value_number)
    return MISSING if value is None or isinstance(value, int | float) else str(value)


def _formatted(frame: pd.DataFrame, formats: dict[str, Callable[[float], str]]) -> pd.DataFrame:
    """The columns of ``formats`` that ``frame`` has, in that order, as table text."""
    return pd.DataFrame(
        {c: frame[c].map(lambda v, f=formats[c]: _cell(v, f)) for c in formats if c in frame},
        index=frame.index, dtype=object,
    )  # fmt: skip


def _rounds_table(rounds: Sequence[dict]) -> list[str]:
    frame = pd.DataFrame(list(rounds), dtype=object)
    if "round" in frame:  # the round number falls back to the position, as in the figures
        frame["round"] = _round_numbers(rounds)["round"]
    return markdown(_formatted(frame, ROUND_COLUMNS))


def _policies_table(policies: dict[str, dict], highlight: str | None) -> list[str]:
    names = _sorted_by_qoe(policies)
    frame = pd.DataFrame([policies[name] for name in names], dtype=object)
    table = _formatted(frame, POLICY_COLUMNS)
    table.insert(0, "policy", [f"**{name}**" if name == highlight else name for name in names])
    return markdown(table)


def _nested(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...`` or ``None`` as soon as a level is missing or not a dict."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _setup_lines(config: Any) -> list[str]:
    he_scheme = _nested(config, "he", "scheme")
    he_name = _nested(config, "he", "name")
    he = he_scheme or he_name
    if he_scheme and he_name and he_name != he_scheme:
        he = f"{he_scheme} (`{he_name}`)"
    items = (
        ("scenario", _nested(config, "scenario", "name")),
        ("clients", _nested(config, "federation", "num_clients")),
        ("rounds", _nested(config, "federation", "rounds")),
        ("HE scheme", he),
        ("strategy", _nested(config, "strategy", "name")),
    )
    return [f"- {label}: {value}" for label, value in items if value is not None]


def _highlight_policy(results: dict) -> str | None:
    """The student's policy name: ``summary.student_policy``, else ``student`` or ``keco``."""
    policies = results.get("policies") or {}
    named = _nested(results, "summary", "student_policy")
    if named:
        return str(named)
    return next((name for name in ("student", "keco") if name in policies), None)


def _summary_line(policies: dict[str, dict], highlight: str | None) -> str | None:
    """One line: which other policies the highlighted one beats on QoE, and which it does not."""
    if highlight is None:
        return None
    own = number((policies.get(highlight) or {}).get("qoe"))
    if own is None:
        return f"**Summary:** no QoE for the student policy `{highlight}`, nothing to compare."
    beaten, not_beaten = [], []
    for name in _sorted_by_qoe(policies):
        other = number(policies[name].get("qoe"))
        if name == highlight or other is None:
            continue
        (beaten if own > other else not_beaten).append(f"{name} ({other:.2f})")
    if not beaten and not not_beaten:
        return f"**Summary:** `{highlight}` (QoE {own:.2f}) has no other policy to compare with."
    if not not_beaten:
        verdict = "beats every other policy on QoE: " + ", ".join(beaten)
    elif not beaten:
        verdict = "beats no other policy on QoE: " + ", ".join(not_beaten)
    else:
        verdict = "beats " + ", ".join(beaten) + " on QoE but not " + ", ".join(not_beaten)
    return f"**Summary:** `{highlight}` (QoE {own:.2f}) {verdict}."


PLAIN_BYTES_PER_VALUE = 4
"""Plaintext float32 (FedAvg's wire format): the reference for bytes per value."""


def communication_lines(rounds: Sequence[dict]) -> list[str]:
    """Mean bytes per client per round up and down, and per uploaded value, next to plaintext
    float32; empty when the rounds do not record them."""
    rows = [
        r for r in rounds
        if number(r.get("bytes_up")) and number(r.get("clients_replied"))
        and number(r.get("values_up"))
    ]  # fmt: skip
    if not rows:
        return []
    clients = [r["clients_replied"] for r in rows]
    up = fmean([r["bytes_up"] / c for r, c in zip(rows, clients, strict=True)])
    down = fmean([r.get("bytes_down", 0) / r.get("clients_train", c) for r, c in
                    zip(rows, clients, strict=True)])  # fmt: skip
    per_value = fmean([r["bytes_up"] / r["values_up"] for r in rows])
    values = fmean([r["values_up"] / c for r, c in zip(rows, clients, strict=True)])
    plain = values * PLAIN_BYTES_PER_VALUE
    table = pd.DataFrame(
        [
            ["uploaded values", f"{values:,.0f}", f"{values:,.0f}"],
            ["bytes up", f"{up:,.0f}", f"{plain:,.0f}"],
            ["bytes down", f"{down:,.0f}", MISSING],
            ["bytes per uploaded value", f"{per_value:.2f}", f"{PLAIN_BYTES_PER_VALUE}"],
        ],
        columns=["per client per round", "this run", "plaintext float32"],
    )
    return ["## Communication", "", *markdown(table), ""]


def write_report(run_dir: Path, results: dict, title: str = "KECO run report") -> Path:
    """Write ``report.md`` and its PNG figures into ``run_dir`` and return the report's path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rounds = results.get("rounds") or []
    policies = results.get("policies") or {}
    highlight = _highlight_policy(results)

    lines = [f"# {title}", ""]
    summary = _summary_line(policies, highlight)
    if summary:
        lines += [summary, ""]
    setup = _setup_lines(results.get("config"))
    if setup:
        lines += ["## Setup", "", *setup, ""]

    if rounds:
        lines += ["## Per round", "", *_rounds_table(rounds), ""]
        figures = {path.name: path for path in plot_rounds(rounds, run_dir)}
        if "rounds_qoe.png" in figures:
            lines += ["![Evaluation QoE, drop ratio and client sets per round](rounds_qoe.png)", ""]
        if "rounds_bytes.png" in figures:
            lines += ["![Bytes up and down per round](rounds_bytes.png)", ""]
        lines += communication_lines(rounds)

    if policies:
        lines += ["## Policies", ""]
        lines += ["Sorted by QoE per task, best first" + (
            f"; the student policy `{highlight}` is in bold." if highlight in policies else "."
        ), ""]  # fmt: skip
        lines += [*_policies_table(policies, highlight), ""]
        plot_policies(policies, run_dir, highlight=highlight)
        lines += ["![QoE and drop ratio per policy](policies.png)", ""]

    report = run_dir / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


@hydra_app("figures")
def main(cfg: DictConfig) -> Path:
    """``python -m experiments.figures dir=<run dir> [title=<title>]`` (``conf/figures.yaml``):
    regenerate ``<run dir>/report.md`` from ``<run dir>/results.json``; prints (and returns)
    the report's path."""
    run_dir = Path(str(cfg.dir))
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise ConfigError(
            f"{results_path} not found; pass dir=<a run directory that holds results.json>"
        )
    results = json.loads(results_path.read_text(encoding="utf-8"))
    report = write_report(run_dir, results, title=str(cfg.title))
    print(report)
    return report


if __name__ == "__main__":
    main()

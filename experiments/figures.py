"""Turn a run's ``results.json`` (DESIGN §8) into ``report.md`` with PNG figures next to it.

Usage: ``python -m experiments.figures <run_dir>`` rereads ``<run_dir>/results.json``, rewrites
``<run_dir>/report.md`` and its figures, and prints the report path.

Every key is optional: a metric missing from every round gets no panel and no table column, and
``None``/NaN values are left out of plots and shown as ``–`` in tables, so partial or older
results files still give a report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; must precede the pyplot import so no display is needed

import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from common.config import ConfigError  # noqa: E402
from experiments.cli import hydra_app  # noqa: E402

MISSING = "–"
HIGHLIGHT_COLOUR = "tab:orange"
OTHER_COLOUR = "tab:blue"
DPI = 120

# KECO's client sets (DESIGN §5): x on time, u late with stale logits, v late with fresh logits.
SET_LABELS = {
    "set_x": "x: on time",
    "set_u": "u: late, stale",
    "set_v": "v: late, fresh",
}


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is missing, NaN, infinite or not numeric."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _round_number(row: dict, index: int) -> int:
    """The row's ``round``, falling back to its 1-based position in the list."""
    number = _number(row.get("round"))
    return int(number) if number is not None else index + 1


def _series(rounds: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    """Round numbers and values of ``key``, only where the value is a finite number."""
    xs, ys = [], []
    for index, row in enumerate(rounds):
        value = _number(row.get(key))
        if value is not None:
            xs.append(_round_number(row, index))
            ys.append(value)
    return xs, ys


def _has(rows: Sequence[dict], key: str) -> bool:
    return any(key in row for row in rows)


def save_figure(
    fig: plt.Figure, path: Path, rect: tuple[float, float, float, float] | None = None
) -> Path:
    """Lay ``fig`` out, write it to ``path`` at :data:`DPI`, close it and return ``path``.

    ``rect`` (figure fractions left, bottom, right, top) keeps the axes inside a box, e.g. to
    leave a strip above them for a title and a legend shared by all panels.
    """
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _save(fig: plt.Figure, path: Path) -> Path:
    return save_figure(fig, path)


# ---- figures ---------------------------------------------------------------------------------


def plot_rounds(rounds: list[dict], out_dir: Path) -> list[Path]:
    """Write the per-round figures into ``out_dir`` and return the paths written.

    ``rounds_qoe.png``: evaluation QoE and drop ratio per round, plus the stacked sizes of the
    client sets x/u/v when the rounds carry them. ``rounds_bytes.png``: bytes uploaded and
    downloaded per round. A panel whose key is in no round is left out; a figure with no panel
    is not written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    line_panels = [
        (key, title, ylabel)
        for key, title, ylabel in (
            ("eval_qoe", "Evaluation QoE", "QoE per task (higher is better)"),
            ("eval_drop_ratio", "Evaluation drop ratio", "dropped / all tasks"),
        )
        if _has(rounds, key)
    ]
    set_keys = [key for key in SET_LABELS if _has(rounds, key)]
    n_panels = len(line_panels) + bool(set_keys)
    # Every panel spans all rounds, so a round missing from one metric still lines up.
    numbers = [_round_number(row, index) for index, row in enumerate(rounds)]
    span = (min(numbers, default=1) - 0.5, max(numbers, default=1) + 0.5)
    if n_panels:
        fig, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels, 3.6), squeeze=False)
        axes = list(axes[0])
        for ax, (key, title, ylabel) in zip(axes, line_panels, strict=False):
            xs, ys = _series(rounds, key)
            ax.plot(xs, ys, marker="o", color=OTHER_COLOUR)
            _round_axis(ax, title, ylabel, span)
        if set_keys:
            _plot_sets(axes[-1], rounds, set_keys, span)
        written.append(_save(fig, out_dir / "rounds_qoe.png"))

    byte_keys = [key for key in ("bytes_up", "bytes_down") if _has(rounds, key)]
    if byte_keys:
        written.append(_plot_bytes(rounds, byte_keys, span, out_dir / "rounds_bytes.png"))
    return written


def _round_axis(ax: plt.Axes, title: str, ylabel: str, span: tuple[float, float]) -> None:
    ax.set_title(title)
    ax.set_xlim(*span)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)


def _plot_sets(
    ax: plt.Axes, rounds: Sequence[dict], set_keys: Sequence[str], span: tuple[float, float]
) -> None:
    """Stacked bars of the set sizes; a round is drawn if it has any set key (missing ones = 0)."""
    rows = [(i, row) for i, row in enumerate(rounds) if any(_has([row], k) for k in set_keys)]
    xs = [_round_number(row, i) for i, row in rows]
    bottom = [0.0] * len(rows)
    for key in set_keys:
        heights = [_number(row.get(key)) or 0.0 for _, row in rows]
        ax.bar(xs, heights, bottom=bottom, label=SET_LABELS[key])
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    _round_axis(ax, "Client sets per round", "clients", span)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, max(bottom, default=1.0) * 1.25 or 1.0)  # headroom for the legend row
    ax.legend(loc="upper center", ncol=len(set_keys), fontsize="small")


def _byte_unit(largest: float) -> tuple[float, str]:
    """Divisor and name of the decimal unit that keeps ``largest`` readable."""
    if largest >= 1e6:
        return 1e6, "MB = 10⁶ bytes"
    return 1e3, "kB = 10³ bytes"


def _plot_bytes(
    rounds: Sequence[dict], keys: Sequence[str], span: tuple[float, float], path: Path
) -> Path:
    series = {key: _series(rounds, key) for key in keys}
    largest = max((max(ys) for _, ys in series.values() if ys), default=0.0)
    divisor, unit = _byte_unit(largest)
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    labels = {"bytes_up": "up (clients → server)", "bytes_down": "down (server → clients)"}
    for key, (xs, ys) in series.items():
        ax.plot(xs, [y / divisor for y in ys], marker="o", label=labels[key])
    _round_axis(ax, "Traffic per round", f"bytes per round ({unit})", span)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _sorted_by_qoe(policies: dict[str, dict]) -> list[str]:
    """Policy names by QoE, best first; policies without a QoE go last, in name order."""

    def key(name: str) -> tuple[bool, float, str]:
        qoe = _number(policies[name].get("qoe"))
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
    height = max(2.5, 0.42 * len(names) + 1.2)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, height), sharey=True)
    panels = (
        ("qoe", "QoE per task (higher is better)", "{:.2f}"),
        ("drop_ratio", "Drop ratio (lower is better)", "{:.3f}"),
    )
    for ax, (key, title, fmt) in zip(axes, panels, strict=True):
        values = [_number(policies[name].get(key)) for name in names]
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
    return _save(fig, out_dir / "policies.png")


# ---- report ----------------------------------------------------------------------------------


def _fixed(decimals: int) -> Callable[[float], str]:
    return lambda value: f"{value:.{decimals}f}"


def _integer(value: float) -> str:
    return f"{round(value):,}"


# Column name → formatter, in table order (ratios/losses 3 decimals, QoE 2, bytes with
# thousands separators, seconds 1 decimal, energy in J per task 3 decimals).
ROUND_COLUMNS: dict[str, Callable[[float], str]] = {
    "round": _integer,
    "train_loss": _fixed(3),
    "eval_qoe": _fixed(2),
    "eval_drop_ratio": _fixed(3),
    "set_x": _integer,
    "set_u": _integer,
    "set_v": _integer,
    "bytes_up": _integer,
    "bytes_down": _integer,
    "seconds": _fixed(1),
}
POLICY_COLUMNS: dict[str, Callable[[float], str]] = {
    "qoe": _fixed(2),
    "drop_ratio": _fixed(3),
    "delay": _fixed(2),
    "energy_total": _fixed(3),
    "params": _integer,
    "infer_us": _fixed(1),
}


def _cell(value: Any, formatter: Callable[[float], str]) -> str:
    number = _number(value)
    if number is not None:
        return formatter(number)
    return MISSING if value is None or isinstance(value, int | float) else str(value)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _rounds_table(rounds: Sequence[dict]) -> list[str]:
    columns = [name for name in ROUND_COLUMNS if _has(rounds, name)]
    rows = [
        [
            _integer(_round_number(row, index)) if name == "round"
            else _cell(row.get(name), ROUND_COLUMNS[name])
            for name in columns
        ]
        for index, row in enumerate(rounds)
    ]  # fmt: skip
    return _markdown_table(columns, rows)


def _policies_table(policies: dict[str, dict], highlight: str | None) -> list[str]:
    columns = [name for name in POLICY_COLUMNS if _has(list(policies.values()), name)]
    rows = [
        [f"**{name}**" if name == highlight else name]
        + [_cell(policies[name].get(column), POLICY_COLUMNS[column]) for column in columns]
        for name in _sorted_by_qoe(policies)
    ]
    return _markdown_table(["policy", *columns], rows)


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
    own = _number((policies.get(highlight) or {}).get("qoe"))
    if own is None:
        return f"**Summary:** no QoE for the student policy `{highlight}`, nothing to compare."
    beaten, not_beaten = [], []
    for name in _sorted_by_qoe(policies):
        other = _number(policies[name].get("qoe"))
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
        if _number(r.get("bytes_up")) and _number(r.get("clients_replied"))
        and _number(r.get("values_up"))
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
    return [
        "## Communication", "",
        *_markdown_table(
            ["per client per round", "this run", "plaintext float32"],
            [
                ["uploaded values", f"{values:,.0f}", f"{values:,.0f}"],
                ["bytes up", f"{up:,.0f}", f"{plain:,.0f}"],
                ["bytes down", f"{down:,.0f}", "–"],
                ["bytes per uploaded value", f"{per_value:.2f}", f"{PLAIN_BYTES_PER_VALUE}"],
            ],
        ),
        "",
    ]  # fmt: skip


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

"""The report writer: report.md tables, PNG figures, missing keys, and the CLI."""

import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg

from experiments.figures import main, plot_policies, plot_rounds, write_report

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_results() -> dict:
    """Three full rounds and one with missing / None / NaN values; five policies."""
    full = dict(eval_delay=6.1, rejected=0, bytes_down=9_400_000)
    return {
        "config": {
            "scenario": {"name": "qeco"},
            "federation": {"num_clients": 10, "rounds": 4},
            "he": {"name": "ckks4096", "scheme": "ckks"},
            "strategy": {"name": "keco"},
        },
        "rounds": [
            dict(round=1, train_loss=1.2344, eval_qoe=25.504, eval_drop_ratio=0.1234, set_x=7,
                 set_u=1, set_v=2, bytes_up=4_700_000, seconds=12.34, **full),
            dict(round=2, train_loss=0.9876, eval_qoe=27.456, eval_drop_ratio=0.0987, set_x=8,
                 set_u=2, set_v=0, bytes_up=4_812_345, seconds=11.96, **full),
            dict(round=3, train_loss=0.8001, eval_qoe=29.999, eval_drop_ratio=0.0501, set_x=9,
                 set_u=0, set_v=1, bytes_up=4_900_001, seconds=12.05, **full),
            # A round whose evaluation failed and whose set sizes were not recorded.
            dict(round=4, train_loss=0.7, eval_qoe=None, eval_drop_ratio=math.nan,
                 bytes_up=5_000_000, bytes_down=9_400_000, seconds=13.0),
        ],
        "policies": {
            "random": {"qoe": 25.0, "drop_ratio": 0.18, "delay": 7.2, "energy_total": 0.95},
            "greedy": {"qoe": 29.5, "drop_ratio": 0.08, "delay": 6.0, "energy_total": 0.85},
            "student": {"qoe": 31.2, "drop_ratio": 0.05, "delay": 5.5, "energy_total": 0.8,
                        "params": 1500, "infer_us": 45.04},
            "oracle": {"qoe": 33.1, "drop_ratio": 0.02, "delay": 5.0, "energy_total": 0.75},
            "all_local": {"qoe": 12.3, "drop_ratio": 0.41, "delay": 9.3, "energy_total": 1.2},
        },
        "summary": {"student_policy": "student"},
    }  # fmt: skip


def table_rows(report: str, heading: str) -> list[list[str]]:
    """Cells of the markdown table under ``## heading`` (header and separator dropped)."""
    section = report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def assert_png(path: Path, min_bytes: int = 10_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_bytes, (path, len(data))


def test_write_report_tables_figures_and_summary(tmp_path):
    report_path = write_report(tmp_path, make_results())
    assert report_path == tmp_path / "report.md"
    report = report_path.read_text()

    assert report.startswith("# KECO run report\n")
    for line in ("- scenario: qeco", "- clients: 10", "- rounds: 4", "- HE scheme: ckks",
                 "- strategy: keco"):  # fmt: skip
        assert line in report

    header = "| round | train_loss | eval_qoe | eval_drop_ratio | set_x | set_u | set_v "
    assert header + "| bytes_up | bytes_down | seconds |" in report
    assert "eval_delay" not in report and "rejected" not in report  # not report columns
    rows = table_rows(report, "Per round")
    assert rows[1] == ["2", "0.988", "27.46", "0.099", "8", "2", "0", "4,812,345", "9,400,000",
                       "12.0"]  # fmt: skip
    assert rows[0][2] == "25.50" and rows[2][2] == "30.00"
    assert rows[3] == ["4", "0.700", "–", "–", "–", "–", "–", "5,000,000", "9,400,000", "13.0"]

    assert "| policy | qoe | drop_ratio | delay | energy_total | params | infer_us |" in report
    policies = table_rows(report, "Policies")
    assert [row[0] for row in policies] == ["oracle", "**student**", "greedy", "random",
                                            "all_local"]  # fmt: skip
    qoes = [float(row[1]) for row in policies]
    assert qoes == sorted(qoes, reverse=True)
    assert policies[1] == ["**student**", "31.20", "0.050", "5.50", "0.800", "1,500", "45.0"]
    assert policies[0][5:] == ["–", "–"]

    summary = next(line for line in report.splitlines() if line.startswith("**Summary:**"))
    assert "`student` (QoE 31.20)" in summary
    assert "beats greedy (29.50), random (25.00), all_local (12.30)" in summary
    assert "not oracle (33.10)" in summary

    for name in ("rounds_qoe.png", "rounds_bytes.png", "policies.png"):
        assert f"]({name})" in report
        assert_png(tmp_path / name)


def test_rounds_without_sets_has_two_panels(tmp_path):
    rounds = [{k: v for k, v in row.items() if not k.startswith("set_")}
              for row in make_results()["rounds"]]  # fmt: skip
    three = plot_rounds(make_results()["rounds"], tmp_path / "three")
    two = plot_rounds(rounds, tmp_path / "two")
    assert [p.name for p in two] == ["rounds_qoe.png", "rounds_bytes.png"]
    width_three = mpimg.imread(three[0]).shape[1]
    width_two = mpimg.imread(two[0]).shape[1]
    # Each panel is the same width, so two panels make a figure 2/3 as wide as three.
    assert math.isclose(width_two / width_three, 2 / 3, rel_tol=0.01)


def test_missing_keys_skip_figures(tmp_path):
    assert plot_rounds([{"round": 1, "train_loss": 0.5}], tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    only_bytes = plot_rounds([{"round": 1, "bytes_up": 900, "bytes_down": 1800}], tmp_path)
    assert [p.name for p in only_bytes] == ["rounds_bytes.png"]
    report = write_report(tmp_path / "bare", {"rounds": [{"round": 1, "seconds": 2.0}]})
    text = report.read_text()
    assert "| round | seconds |" in text and "## Policies" not in text and "png" not in text


def test_plot_policies_highlight_and_no_highlight(tmp_path):
    policies = make_results()["policies"]
    assert_png(plot_policies(policies, tmp_path / "a", highlight="student"))
    assert_png(plot_policies({"random": {"qoe": -3.0}}, tmp_path / "b"))


def figures(*argv: str) -> int:
    """``python -m experiments.figures <argv>`` in this process; its exit code."""
    try:
        main(list(argv))
    except SystemExit as end:
        return end.code
    return 0


def test_cli_regenerates_report(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps(make_results()))
    done = subprocess.run(
        [sys.executable, "-m", "experiments.figures", f"dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "report.md")
    first = (tmp_path / "report.md").read_text()
    assert "27.46" in first and "4,812,345" in first

    (tmp_path / "report.md").unlink()
    assert figures(f"dir={tmp_path}", "title=Demo") == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.md")
    assert (tmp_path / "report.md").read_text() == first.replace("# KECO run report", "# Demo")


def test_the_committed_demo_report_is_reproduced(tmp_path):
    """The demo's results.json gives its committed report.md again, byte for byte (per-round,
    communication and policy tables, setup and summary lines)."""
    demo = ROOT / "experiments" / "results" / "demo"
    results = json.loads((demo / "results.json").read_text())
    report = write_report(tmp_path, results, title="KECO federation (keco)")
    assert report.read_text() == (demo / "report.md").read_text()
    assert "## Communication" in report.read_text()
    for name in ("rounds_qoe.png", "rounds_bytes.png", "policies.png"):
        assert mpimg.imread(tmp_path / name).shape == mpimg.imread(demo / name).shape

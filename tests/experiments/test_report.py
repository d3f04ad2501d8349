"""The sweep summariser: loading, seed aggregation, summary.csv/.md, figures, errors, CLI."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from experiments.report import SweepError, aggregate, load_sweep, main, plot_study

ROOT = Path(__file__).resolve().parents[2]


def report(*argv: str) -> int:
    """``python -m experiments.report <argv>`` in this process; its exit code."""
    try:
        main(list(argv))
    except SystemExit as end:
        return end.code
    return 0


ENERGY_SPEC = {
    "title": "KECO Fig. 4: energy vs data scale",
    "x": "data_scale",
    "xlabel": "Data scale (tasks per episode)",
    "panels": [
        {"metric": "energy_local", "ylabel": "Local computing energy (J/task)"},
        {"metric": "energy_tx", "ylabel": "Transmission energy (J/task)"},
    ],
    "methods": ["keco", "ddpg", "cnn"],
    "labels": {"keco": "KECO", "ddpg": "DDPG", "cnn": "CNN"},
}
FAILURES_SPEC = {
    "title": "KECO Fig. 6: offloading failures",
    "x": "task_scale",
    "facet": "pressure",
    "facet_labels": {"cpu": "CPU pressure"},
    "panels": [{"metric": "failures", "ylabel": "Offloading failures"}],
    "methods": ["keco", "ddpg"],  # "random" is in the records but filtered out of the figure
}
LOAD_SPEC = {
    "x": "load",
    "kind": "bar",
    "panels": [{"metric": m} for m in ("delay", "completion", "energy", "qoe")],
}
METHODS = ("keco", "ddpg", "cnn")
SCALES = (8000, 2000, 4000)  # written unsorted: numeric x must come out sorted
LOADS = ("low", "medium", "high")  # categorical x: order of appearance


def energy_value(metric: str, method: str, scale: int, seed: int) -> float:
    """Deterministic, seed-dependent values; keco/2000/energy_local is 1.0 and 2.0."""
    base = {"energy_local": 1.0, "energy_tx": 0.25, "delay": 5.0}[metric]
    return base * (1 + METHODS.index(method)) * scale / 2000 + seed * scale / 2000


def write_job(job_dir: Path, results: dict | None, overrides: list[str]) -> None:
    """A Hydra job directory: ``.hydra/overrides.yaml`` and (unless None) ``results.json``."""
    (job_dir / ".hydra").mkdir(parents=True)
    lines = "".join(f"- {item}\n" for item in overrides)
    (job_dir / ".hydra" / "overrides.yaml").write_text(lines)
    if results is not None:
        (job_dir / "results.json").write_text(json.dumps(results))


def study_results(study: str, seed: int, spec: dict, records: list[dict]) -> dict:
    config = {"seed": seed, "experiment": {"name": study, "report": spec}}
    return {"study": study, "seed": seed, "config": config, "records": records, "rounds": []}


def energy_records(seed: int) -> list[dict]:
    return [
        {
            "method": method,
            "data_scale": scale,
            "energy_local": energy_value("energy_local", method, scale, seed),
            "energy_tx": energy_value("energy_tx", method, scale, seed),
            "delay": energy_value("delay", method, scale, seed),
            "note": "text columns are not metrics",
            "ok": True,  # nor are booleans
        }
        for scale in SCALES
        for method in METHODS
    ]


def failure_records(seed: int) -> list[dict]:
    extra = [{"method": "keco", "pressure": "cpu", "task_scale": 300, "failures": 50.0}]
    return (extra if seed == 0 else []) + [
        {
            "method": method,
            "pressure": pressure,
            "task_scale": scale,
            "failures": 10 * (i + 1) + scale / 100 + 3 * seed + (5 if pressure == "memory" else 0),
        }
        for pressure in ("cpu", "memory")
        for scale in (100, 200)
        for i, method in enumerate(("keco", "ddpg", "random"))
    ]


def load_records(seed: int) -> list[dict]:
    rows = []
    for i, load in enumerate(LOADS):
        for j, method in enumerate(("ours", "greedy")):
            rows.append(
                {
                    "method": method,
                    "load": load,
                    "delay": 5.0 + i + j,
                    "completion": 0.9 - 0.1 * i,
                    "energy": 0.5 + 0.01 * j,
                    "qoe": 800.0 - 50 * i - 10 * j,
                }
            )
    # One NaN (a failed evaluation) and one missing value: left out, n drops to 0 -> no row.
    rows[0]["qoe"] = float("nan")
    rows[1]["qoe"] = None
    return rows


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    """Two studies x two seeds, a one-seed bar study, another task's job and a failed job."""
    root = tmp_path / "multirun" / "study" / "2026-11-23_10-00-00"
    job = 0
    for seed in (0, 1):
        ov = ["experiment=keco_energy", f"seed={seed}"]
        write_job(
            root / str(job),
            study_results("keco_energy", seed, ENERGY_SPEC, energy_records(seed)),
            ov,
        )
        job += 1
    for seed in (0, 1):
        results = study_results("keco_failures", seed, FAILURES_SPEC, failure_records(seed))
        # Deeper than the job directory: results.json is searched at any depth.
        write_job(root / str(job), None, ["experiment=keco_failures", f"seed={seed}"])
        (root / str(job) / "run").mkdir()
        (root / str(job) / "run" / "results.json").write_text(json.dumps(results))
        job += 1
    write_job(
        root / str(job),
        study_results("kd_load", 3, LOAD_SPEC, load_records(3)),
        ["experiment=kd_load", "seed=3"],
    )
    job += 1
    # Another task's results.json (no study/records): skipped with a warning.
    write_job(
        root / str(job), {"rounds": [{"round": 1}], "policies": {}}, ["experiment=federation"]
    )
    job += 1
    # A job that crashed before writing results.json.
    write_job(root / str(job), None, ["experiment=keco_energy", "seed=2"])
    (root / str(job) / "run.log").write_text("Traceback ...\n")
    # A results.json inside .hydra is never read (it would add seed 7).
    (root / "0" / ".hydra" / "results.json").write_text(
        json.dumps(study_results("keco_energy", 7, ENERGY_SPEC, energy_records(7)))
    )
    return root


def read_csv(path: Path) -> dict[tuple[str, str, str, str, str], tuple[float, float, int]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [
            "study", "method", "facet", "x", "metric", "mean", "std", "ci_low", "ci_high", "n",
            "diff", "diff_low", "diff_high",
        ]  # fmt: skip
        rows = list(reader)
        for r in rows:  # the mean lies inside its interval
            assert float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"])
        return {
            (r["study"], r["method"], r["facet"], r["x"], r["metric"]): (
                float(r["mean"]),
                float(r["std"]),
                int(r["n"]),
            )
            for r in rows
        }


def section(text: str, heading: str) -> str:
    return text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def test_main_writes_summary_tables_and_figures(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert report(f"dir={sweep}", f"out={out}") == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == str(out / "summary.md")
    assert "warning: skipping" in captured.err and str(sweep / "5" / "results.json") in captured.err

    # summary.csv: every (method, x, metric) cell against numpy over the seeds.
    table = read_csv(out / "summary.csv")
    for metric in ("energy_local", "energy_tx", "delay"):  # delay is not plotted, still there
        for method in METHODS:
            for scale in SCALES:
                values = [energy_value(metric, method, scale, seed) for seed in (0, 1)]
                mean, std, n = table["keco_energy", method, "", str(scale), metric]
                assert mean == pytest.approx(np.mean(values), rel=1e-12)
                assert std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
                assert n == 2
    for pressure in ("cpu", "memory"):
        for method in ("keco", "ddpg", "random"):  # the methods filter keeps the CSV complete
            values = [
                r["failures"]
                for seed in (0, 1)
                for r in failure_records(seed)
                if (r["method"], r["pressure"], r["task_scale"]) == (method, pressure, 200)
            ]
            mean, std, n = table["keco_failures", method, pressure, "200", "failures"]
            assert (mean, n) == (pytest.approx(np.mean(values)), 2)
            assert std == pytest.approx(np.std(values, ddof=1))
    assert table["kd_load", "greedy", "", "high", "qoe"] == (690.0, 0.0, 1)  # one seed: std 0
    assert ("kd_load", "ours", "", "low", "qoe") not in table  # NaN only
    assert ("kd_load", "greedy", "", "low", "qoe") not in table  # None only
    columns = {key[4] for key in table}
    assert columns == {
        "energy_local",
        "energy_tx",
        "delay",
        "failures",
        "completion",
        "energy",
        "qoe",
    }
    assert {key[0] for key in table} == {"keco_energy", "keco_failures", "kd_load"}

    md = (out / "summary.md").read_text()
    energy = section(md, "keco_energy: KECO Fig. 4: energy vs data scale")
    assert "- seeds: 0, 1\n- jobs: 2\n" in energy  # not seed 7 from .hydra/results.json
    assert "- jobs without results: `6` (experiment=keco_energy seed=2)" in energy
    assert "- other metrics (in `summary.csv` only): delay" in energy
    assert "### (a) Local computing energy (J/task) (`energy_local`)" in energy
    assert "| Data scale (tasks per episode) | KECO | DDPG | CNN |" in energy
    # keco at 2000: 1 and 2 -> 1.5 [1, 2] (two seeds resampled); cnn at 8000: 12 and 16 ->
    # 14 [12, 16]. One precision per table: 3 significant digits of its smallest mean (1.5).
    assert "| 2000 | 1.50 [1.00, 2.00] | 2.50 [2.00, 3.00] | 3.50 [3.00, 4.00] |" in energy
    assert "| 8000 | 6.00 [4.00, 8.00] | 10.00 [8.00, 12.00] | 14.00 [12.00, 16.00] |" in energy
    rows = [line.split("|")[1].strip() for line in energy.splitlines() if line.startswith("| ")]
    assert rows[1:4] == ["2000", "4000", "8000"]  # numeric x sorted
    assert "![](keco_energy.png)" in energy

    failures = section(md, "keco_failures")
    assert "- seeds: 0, 1\n- jobs: 2\n" in failures and "without results" not in failures
    assert "### (a) CPU pressure (`failures`)" in failures
    assert "### (b) pressure = memory (`failures`)" in failures
    assert "| task_scale | keco | ddpg |" in failures  # random filtered out of tables
    assert "| 100 | 12.5 [11.0, 14.0] | 22.5 [21.0, 24.0] |" in failures
    # Only seed 0 measured keco at 300, nobody ddpg: the cell says n, the missing one is "–".
    assert "| 300 | 50.0 (n=1) | – |" in failures

    load = section(md, "kd_load")
    assert "- seeds: 3\n- jobs: 1\n" in load
    lines = [line for line in load.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[:4]] == ["load", *LOADS]
    assert "### (a) delay\n" in load  # no "(`delay`)" when the heading is the column
    assert "| low | 5.00 (n=1) | 6.00 (n=1) |" in load
    qoe = load.split("### (d) qoe\n", 1)[1]
    assert "| low |" not in qoe and "| medium | 750 (n=1) | 740 (n=1) |" in qoe  # NaN, None

    # Figures: 1x2, 1x2 (1 panel x 2 facets) and 2x2 (four panels), at 120 dpi.
    shapes = {
        name: mpimg.imread(out / f"{name}.png").shape
        for name in ("keco_energy", "keco_failures", "kd_load")
    }
    for height, width, _ in shapes.values():
        assert 400 < height < 1200 and 900 < width < 1300
    assert shapes["keco_energy"][:2] == shapes["keco_failures"][:2]
    assert shapes["keco_energy"][1] > 1.8 * shapes["keco_energy"][0]  # one row of two
    assert shapes["kd_load"][1] == shapes["keco_energy"][1]  # two columns
    assert shapes["kd_load"][0] > 1.6 * shapes["keco_energy"][0] - 60  # two rows


def test_default_out_is_the_sweep_dir_and_cli(sweep):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.report", f"dir={sweep}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(sweep / "summary.md")
    for name in ("summary.csv", "summary.md", "keco_energy.png", "kd_load.png"):
        assert (sweep / name).is_file()


def test_nothing_usable_exits_2_with_a_hint(tmp_path, capsys):
    assert report(f"dir={tmp_path}") == 2
    err = capsys.readouterr().err
    assert f"no study results.json under {tmp_path}" in err
    assert "python -m experiments.run -m experiment=<name> seed=0,1" in err

    write_job(tmp_path / "0", {"rounds": []}, ["experiment=federation"])  # only non-study files
    assert report(f"dir={tmp_path}") == 2
    err = capsys.readouterr().err
    assert "warning: skipping" in err and "no study results.json" in err
    assert not (tmp_path / "summary.md").exists()

    assert report(f"dir={tmp_path / 'missing'}") == 2
    assert "is not a directory" in capsys.readouterr().err


def test_duplicate_seed_names_both_files(tmp_path, capsys):
    for job in ("0", "1"):
        write_job(
            tmp_path / job,
            study_results("keco_energy", 0, ENERGY_SPEC, energy_records(0)),
            ["seed=0"],
        )
    first, second = tmp_path / "0" / "results.json", tmp_path / "1" / "results.json"
    with pytest.raises(SweepError, match="duplicate results for study 'keco_energy' seed 0"):
        load_sweep(tmp_path)
    assert report(f"dir={tmp_path}") == 2
    err = capsys.readouterr().err
    assert str(first) in err and str(second) in err


def test_missing_plot_spec_is_an_error(tmp_path, capsys):
    write_job(tmp_path / "0", {"study": "s", "seed": 0, "config": {}, "records": []}, [])
    assert report(f"dir={tmp_path}") == 2
    assert "config.experiment.report" in capsys.readouterr().err


def test_aggregate_and_plot_study_as_functions(sweep, tmp_path):
    jobs = load_sweep(sweep)["kd_load"]
    assert [job["seed"] for job in jobs] == [3]
    assert jobs[0]["dir"] == sweep / "4" and jobs[0]["overrides"] == [
        "experiment=kd_load",
        "seed=3",
    ]
    rows = aggregate(jobs)
    delay = [(r["x"], r["method"], r["mean"]) for r in rows if r["metric"] == "delay"]
    assert delay == [
        ("low", "ours", 5.0),
        ("low", "greedy", 6.0),
        ("medium", "ours", 6.0),
        ("medium", "greedy", 7.0),
        ("high", "ours", 7.0),
        ("high", "greedy", 8.0),
    ]
    assert [r["metric"] for r in rows][:: len(delay)] == ["delay", "completion", "energy", "qoe"]
    # A raw spec (optional keys absent) is accepted by plot_study; a line plot of text x works.
    path = plot_study(rows, {**LOAD_SPEC, "kind": "line"}, tmp_path / "fig" / "load.png")
    height, width, _ = mpimg.imread(path).shape
    assert width > 900 and height > 700


def test_time_series_with_numeric_facet(tmp_path):
    """KECO Fig. 5: throughput over 60 time points, one panel, facets volume 10500 / 8500."""
    spec = {"x": "time", "facet": "volume", "panels": [{"metric": "throughput"}]}
    for seed in (0, 1):
        records = [
            {"method": m, "volume": v, "time": t, "throughput": (t + 10) * (1 + i) + seed + v / 1e3}
            for v in (10500, 8500)  # numeric facet values come out sorted
            for t in range(0, 600, 10)
            for i, m in enumerate(("keco", "cnn"))
        ]
        write_job(tmp_path / str(seed), study_results("fig5", seed, spec, records), [])
    assert report(f"dir={tmp_path}") == 0
    md = (tmp_path / "summary.md").read_text()
    assert md.index("### (a) volume = 8500") < md.index("### (b) volume = 10500")
    assert (
        "| 590 | 609.0 [608.5, 609.5] | 1209.0 [1208.5, 1209.5] |" in md
    )  # 8500 table: 3 digits of its smallest mean, 19.0
    height, width, _ = mpimg.imread(tmp_path / "fig5.png").shape
    assert width > 1.8 * height


def test_episode_intervals_paired_differences_budget_and_curves(tmp_path):
    """Records with per-episode values: intervals over seeds and episodes, differences to
    greedy on the same episodes, the budget table and the per-round curve figure."""
    spec = {
        "x": "load", "panels": [{"metric": "qoe"}], "labels": {"keco": "KECO"},
        "curves": {"x": "sim_seconds", "y": "eval_qoe", "xlabel": "Simulated time (s)"},
    }  # fmt: skip
    episode = np.array([30.0, 34.0, 26.0, 30.0])  # what every policy's episodes share
    for seed in range(3):
        records = []
        for load in (0.1, 0.3):
            for method, gain in (("greedy", 0.0), ("keco", 2.0 + seed)):
                values = (episode - 10 * load + gain).tolist()
                records.append({"method": method, "load": load, "qoe": float(np.mean(values)),
                                "episodes": {"qoe": values}})  # fmt: skip
        rounds = [
            {"method": "keco", "load": 0.1, "round": r, "sim_seconds": 2.0, "eval_qoe": 20.0 + r}
            for r in (1, 2, 3)
        ]
        results = {**study_results("toy", seed, spec, records), "rounds": rounds}
        results["methods"] = {"keco": {"episodes": 40, "steps": 5000 + seed, "params": 9863,
                                       "train_seconds": 60.0}}  # fmt: skip
        write_job(tmp_path / str(seed), results, [f"seed={seed}"])
    assert report(f"dir={tmp_path}") == 0
    rows = {(r["method"], r["x"]): r for r in aggregate(load_sweep(tmp_path)["toy"])}
    greedy, keco = rows["greedy", 0.3], rows["keco", 0.3]
    # greedy: the same on every seed; only the episodes spread it (mean 27, an interval)
    assert greedy["mean"] == pytest.approx(27.0) and greedy["std"] == 0.0
    assert greedy["ci_low"] < 27.0 < greedy["ci_high"] and greedy["diff"] is None
    # keco = greedy + 2, 3, 4 on the three seeds: the paired difference has no episode noise
    assert keco["diff"] == pytest.approx(3.0)
    assert 2.0 <= keco["diff_low"] < 3.0 < keco["diff_high"] <= 4.0
    assert keco["ci_high"] - keco["ci_low"] > keco["diff_high"] - keco["diff_low"]
    md = (tmp_path / "summary.md").read_text()
    assert "### Paired difference to `greedy` in `qoe`" in md
    assert "| 0.3 | 3.00 [" in md
    assert "### Training budget" in md and "| KECO | 40 | 5,001 | 9,863 | 60 |" in md
    assert "![](toy_curves.png)" in md and (tmp_path / "toy_curves.png").is_file()


def test_budget_table_and_csv_format(tmp_path):
    """The training budget table (a column never recorded is "–", the note is kept) and the
    exact text of summary.csv: csv line ends, floats as repr, empty differences, quoting."""
    spec = {"x": "load", "panels": ["qoe"], "labels": {"keco": "KECO"}}
    for seed in (0, 1):
        records = [
            {"method": "greedy", "load": 0.5, "qoe": 10.0 + seed},
            {"method": "keco, tuned", "load": 0.5, "qoe": 12.5 + 2 * seed},
        ]
        results = study_results("toy", seed, spec, records)
        results["methods"] = {"keco": {"episodes": 40 + seed, "steps": 1000, "note": "+ teacher"},
                              "ddpg": {"train_seconds": 7.5, "note": 3}}  # fmt: skip
        write_job(tmp_path / str(seed), results, [f"seed={seed}"])
    assert report(f"dir={tmp_path}") == 0
    md = (tmp_path / "summary.md").read_text()
    assert "| method | episodes | optimiser steps | parameters | seconds | note |" in md
    assert "| KECO | 40 | 1,000 | – | – | + teacher |" in md  # 40.5 rounds half to even
    assert "| ddpg | – | – | – | 8 |  |" in md
    lines = (tmp_path / "summary.csv").read_bytes().split(b"\r\n")
    assert lines[0].startswith(b"study,method,facet,x,metric,mean,std,ci_low,ci_high,n,diff,")
    assert lines[1].startswith(b"toy,greedy,,0.5,qoe,10.5,0.7071067811865476,10.0,11.0,2,,,")
    assert lines[2].startswith(b'toy,"keco, tuned",,0.5,qoe,13.5,1.4142135623730951,')
    assert lines[2].endswith(b",2,3.0,2.5,3.5") and lines[3:] == [b""]  # paired: 2 and 4

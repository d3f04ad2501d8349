"""The benchmark suites: output structure, ratios computed from the measured numbers, tables.

The federation suites (he, flower, scale) are first driven with canned federation results (what
they compute from them), then, marked slow, run for real on tiny sizes. Nothing here asserts a
wall-clock limit: benchmarks measure, tests check behaviour.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import psutil
import pytest

from experiments import bench
from experiments.benchmarks import _fed

TINY = ["scenario.n_devices=8", "scenario.n_slots=30", "model=mlp", "model.hidden=[16]"]
TINY_ARG = "overrides=[" + ",".join(f"'{o}'" for o in TINY) + "]"


def _fake_run(seconds_per_client: dict[str, float]):
    """A stand-in for ``_fed.run_federation``: rounds whose time depends on the run's config."""
    calls = []

    def fake(label, overrides, work_dir, *, teacher=None, stock_polling=False, timeout_s=0.0):
        opts = dict(o.split("=", 1) for o in overrides if "=" in o)
        n = int(opts["federation.num_clients"])
        per_round = max(1, round(n * float(opts.get("federation.fraction_train", 1.0))))
        key = next((k for k in seconds_per_client if k in label), "")
        per_client = seconds_per_client.get(key, 1.0)
        rounds = [
            {
                "round": r,
                "seconds": (30.0 if r == 1 else per_client * per_round),
                "cpu_seconds": (20.0 if r == 1 else 2 * per_client * per_round),
                "clients_train": per_round,
                "bytes_up": 1000 * per_round,
                "bytes_down": 2000 * per_round,
            }
            for r in range(1, int(opts.get("federation.rounds", 3)) + 1)
        ]
        calls.append((label, list(overrides), stock_polling))
        return {
            "label": label, "overrides": list(overrides), "num_clients": n,
            "fast_polling": not stock_polling, "rounds": rounds, "wall_s": 100.0,
            "prepare_s": 1.0, "simulate_s": 90.0, "startup_s": 10.0, "cpu_s": 50.0,
            "peak_rss_bytes": int(1e9 + 1e6 * n), "peak_pss_bytes": int(5e8 + 1e6 * n),
            "peak_processes": 12, "load_before": [1.0, 1.0, 1.0], "load_after": [2.0, 1.0, 1.0],
        }  # fmt: skip

    return fake, calls


@pytest.fixture
def fake_federations(monkeypatch, tmp_path):
    def install(seconds_per_client: dict[str, float]):
        fake, calls = _fake_run(seconds_per_client)
        monkeypatch.setattr(_fed, "run_federation", fake)
        monkeypatch.setattr(_fed, "prepare_teacher", lambda work_dir, overrides: tmp_path / "t")
        return calls

    return install


def _last_json(capsys) -> dict:
    captured = capsys.readouterr()
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


def test_he_whole_round_ratios_come_from_the_runs(fake_federations, capsys, tmp_path):
    calls = fake_federations({"he-ckks": 1.08, "he-off": 1.0})
    out = bench.main(["suite=he", "parts=[round]", "clients=[4,100]", "rounds=3", "repeats=2",
                      f"work_dir={tmp_path}", TINY_ARG])  # fmt: skip
    printed, err = _last_json(capsys)
    assert printed == json.loads(json.dumps(out))
    # two repeats per mode, the order alternating; every client trains every round
    labels = [c[0] for c in calls]
    assert labels[:4] == ["he-ckks-4-r0", "he-off-4-r0", "he-off-4-r1", "he-ckks-4-r1"]
    assert all("federation.fraction_train=1.0" in c[1] for c in calls)
    assert all(TINY[0] in c[1] for c in calls)
    rows = {(r["clients"], r["he"]): r for r in out["round"]["rows"]}
    assert rows[100, "ckks"]["round_s"] == pytest.approx(108.0)  # round 1 is left out
    assert rows[100, "ckks"]["first_round_s"] == 30.0
    assert rows[100, "off"]["steady_rounds"] == 4  # 2 repeats × rounds 2 and 3
    ratio = {q["clients"]: q for q in out["round"]["ratios"]}[100]
    assert ratio["round_ratio"] == pytest.approx(1.08)
    assert ratio["round_cpu_ratio"] == pytest.approx(1.08)
    assert out["targets_met"] == {
        "ckks_round_wall_le_1.1x_plain_at_100_clients": True,
        "ckks_round_cpu_le_1.1x_plain_at_100_clients": True,
    }
    assert "| 100 | 108.00 | 100.00 | 1.08 |" in out["table"]
    assert "| clients |" in err and "CKKS vs plaintext" in err
    assert out["round"]["config"]["student"].startswith("mlp")


def test_he_micro_benchmarks_still_run(capsys):
    out = bench.main(["suite=he", "parts=[micro]", "micro_clients=[10]", "sizes=[40]",
                      "classes=3", "he=ckks4096"])  # fmt: skip
    (row,) = out["micro"]["rows"]
    assert row["clients"] == 10 and row["params"] == 40 and row["set_x"] == 8
    assert row["encrypt_ms_per_client"] > 0 and row["upload_bytes_per_client"] > 0
    assert row["max_abs_error"] < 1e-6
    # 40 parameters + 9 soft labels fill a fraction of one 4,096-value ciphertext
    assert row["upload_bytes_per_client"] / 4096 <= 8.1
    assert row["upload_bytes_per_value"] == row["upload_bytes_per_client"] / 49
    assert set(out["targets_met"]) >= {
        "max_abs_error_le_1e-6", "upload_le_10_bytes_per_value_at_largest_model",
        "download_le_20_bytes_per_value_at_largest_model", "security_ge_128_bits",
    }  # fmt: skip
    assert out["micro"]["targets_met"]["security_ge_128_bits"] is True
    assert "| 10 | 40 |" in out["table"]
    assert "micro-benchmarks" in capsys.readouterr().err


def test_he_rejects_unknown_parts(capsys):
    with pytest.raises(SystemExit) as end:
        bench.main(["suite=he", "parts=[everything]"])
    assert end.value.code == 2 and "unknown parts" in capsys.readouterr().err


def test_flower_compares_keco_with_fedavg_on_identical_training(fake_federations, tmp_path):
    calls = fake_federations({"flower-keco": 1.05, "flower-fedavg": 1.0})
    out = bench.main(["suite=flower", "clients=[5]", "rounds=2", f"work_dir={tmp_path}", TINY_ARG])
    keco = next(c[1] for c in calls if "keco" in c[0])
    fedavg = next(c[1] for c in calls if "fedavg" in c[0])
    assert "strategy=keco" in keco and "strategy.local.logits_source=student" in keco
    assert "strategy.delta.start=1.0" in keco and "he=off" in keco
    assert "strategy=fedavg" in fedavg and "he=off" in fedavg
    (ratio,) = out["ratios"]
    assert ratio["round_ratio"] == pytest.approx(1.05)
    assert ratio["round_cpu_ratio"] == pytest.approx(1.05)
    assert out["targets_met"]["keco_round_wall_le_1.1x_fedavg_at_5_clients"] is True
    assert out["config"]["local"]["logits_source"] == "student"
    assert "| 5 | 5.25 | 5.00 | 1.05 |" in out["table"]


def test_scale_reports_client_round_cost_and_memory(fake_federations, tmp_path):
    calls = fake_federations({"scale-1000": 1.5, "scale-100": 1.0, "scale-10": 1.0})
    out = bench.main(["suite=scale", "clients=[10,100,1000]", "stock_at=[1000]",
                      f"work_dir={tmp_path}", TINY_ARG])  # fmt: skip
    assert [c[0] for c in calls] == ["scale-10", "scale-100", "scale-1000", "scale-1000-stock"]
    assert [c[2] for c in calls] == [False, False, False, True]
    assert all("federation.fraction_train=0.1" in c[1] for c in calls)
    rows = {(r["clients"], r["polling"]): r for r in out["rows"]}
    assert rows[1000, "fast"]["clients_per_round"] == 100
    assert rows[10, "fast"]["clients_per_round"] == 1
    assert rows[100, "fast"]["client_round_s"] == pytest.approx(1.0)
    assert out["client_round_ratio"] == pytest.approx(1.5)
    assert out["targets_met"] == {
        "client_round_wall_at_1000_le_1.2x_at_100": False,
        "client_round_cpu_at_1000_le_1.2x_at_100": False,
        "peak_rss_at_1000_le_8GB": True,
    }
    assert "| 1000 | 100 | stock |" in out["table"]


def test_infer_reports_latency_targets(capsys):
    out = bench.main(["suite=infer", "reps=20", "calibration=512"])
    rows = ("teacher", "teacher_ts", "student", "student_int8", "student_ts", "student_int8_ts",
            "fed_student", "fed_student_int8", "fed_student_ts", "fed_student_int8_ts")  # fmt: skip
    for name in rows:
        assert out[name]["latency_us_batch1"] > 0 and out[name]["decisions_per_s_batch1024"] > 0
        assert f"| {name} |" in out["table"]
    assert out["student_int8"]["params"] == out["student"]["params"] < out["teacher"]["params"]
    # float exports compute what the module computes; int8 ones mostly agree and are smaller
    assert out["teacher_ts"]["agreement"] == out["student_ts"]["agreement"] == 1.0
    for name in ("student", "fed_student"):
        assert out[f"{name}_int8_ts"]["runtime"] == "TorchScript"
        assert out[f"{name}_int8_ts"]["agreement"] >= 0.9
        assert out[f"{name}_int8_ts"]["size_bytes"] < 0.6 * out[f"{name}_ts"]["size_bytes"]
    assert out["student_over_teacher"] == pytest.approx(
        out["student"]["latency_us_batch1"] / out["teacher"]["latency_us_batch1"]
    )
    assert out["int8_over_student"] == pytest.approx(
        out["student_int8_ts"]["latency_us_batch1"] / out["student_ts"]["latency_us_batch1"]
    )
    assert out["targets_met"]["student_le_0.5x_teacher"] == (out["student_over_teacher"] <= 0.5)
    assert out["targets_met"]["int8_le_float_student"] == (out["int8_over_student"] <= 1.0)
    assert set(out["targets_met"]) == {
        "student_le_0.5x_teacher", "student_ts_le_0.5x_teacher_ts", "int8_le_float_student",
        "fed_student_le_0.5x_teacher", "fed_int8_le_float_fed_student",
    }  # fmt: skip
    small = bench.main(["suite=infer", "reps=5", "calibration=256", "fed_student=none",
                        "mkldnn=false"])  # fmt: skip
    assert "fed_student_int8" not in small and small["mkldnn"] is False
    assert "| teacher |" in capsys.readouterr().err


KID = "import sys; b = b'k' * 80_000_000; print('kid', flush=True); sys.stdin.read()"
TREE = f"""
import subprocess, sys, time
kid = subprocess.Popen(
    [sys.executable, '-c', {KID!r}, 'default_worker.py'],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
)
a = b'r' * 50_000_000
kid.stdout.readline()  # the kid's memory is written: one line on our own pipe, never interleaved
print('root', kid.pid, flush=True)
sys.stdin.readline()
t = time.process_time()
while time.process_time() - t < 0.3:  # 0.3 CPU seconds, however loaded the machine
    pass
print('burnt', flush=True)
sys.stdin.readline()
kid.stdin.close()
kid.wait()
"""
"""A process tree of two: the root (50 MB) and a kid (80 MB) named like a Ray worker. The kid
tells the root, and the root the test, when the memory is written; the root then burns CPU on
request and ends on a second one."""


def test_tree_monitor_reads_cpu_and_memory_of_a_process_tree():
    root = subprocess.Popen(
        [sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    kid = None
    try:
        said = root.stdout.readline().split()  # after the kid has said it is ready
        assert said[0] == "root"
        kid = psutil.Process(int(said[1]))
        monitor = _fed.TreeMonitor(root.pid)
        monitor.sample()
        assert set(monitor.processes) == {root.pid, kid.pid} and monitor.peak_processes == 2
        assert monitor.roles == {root.pid: "driver", kid.pid: "clients"}
        # both wrote their bytes: resident, and private, so in PSS too (which RSS bounds)
        assert 130e6 <= monitor.peak_pss <= monitor.peak_rss
        before = monitor.cpu_by_role()
        root.stdin.write("\n")
        root.stdin.flush()
        assert root.stdout.readline().strip() == "burnt"
        monitor.sample()
        after = monitor.cpu_by_role()
        # the root's 0.3 s of CPU (the kernel counts it in clock ticks of 0.01 s)
        assert after["driver"] - before["driver"] >= 0.28
        assert after["clients"] >= before["clients"] > 0 and after["ray"] == 0
        assert monitor.samples[-1][1] == pytest.approx(sum(after.values()))
        root.stdin.write("\n")
        root.stdin.flush()
        assert root.wait() == 0
        last = monitor.samples[-1]
        monitor.sample()  # the tree is gone: its processes keep their last CPU time
        assert monitor.samples[-1][1:] == last[1:] and monitor.peak_processes == 2
        assert monitor.tree() == []
        t0, t1 = monitor.samples[0][0], monitor.samples[-1][0]
        assert monitor.cpu_at(t0 - 1) == monitor.samples[0][1]
        assert monitor.cpu_at(t0 - 1) <= monitor.cpu_at((t0 + t1) / 2) <= monitor.cpu_at(t1 + 1)
        assert monitor.cpu_at(t1 + 1, "driver") == after["driver"]
    finally:
        if kid is not None:
            _fed._kill([kid])  # only if still the kid: psutil checks its start time
        root.kill()
        root.wait()


def test_tree_monitor_samples_in_the_background_until_stopped():
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                               stdin=subprocess.PIPE)  # fmt: skip
    try:
        # an interval far longer than the test: the thread reads the tree before its first
        # wait, and leaving the block ends the wait
        with _fed.TreeMonitor(sleeper.pid, interval_s=3600) as monitor:
            pass
        assert len(monitor.samples) == 1 and set(monitor.processes) == {sleeper.pid}
    finally:
        sleeper.stdin.close()
        sleeper.wait()


def test_kill_ends_live_processes_and_skips_gone_ones():
    sleepers = [subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
                for _ in range(2)]  # fmt: skip
    try:
        procs = [psutil.Process(s.pid) for s in sleepers]
        _fed._kill([*procs, procs[0]])  # each once, though named twice
        assert [s.wait() for s in sleepers] == [-signal.SIGKILL] * 2
        # reaped: gone for the kill, the readings and the tree alike
        _fed._kill(procs)
        assert _fed._cpu_and_rss(procs[0]) is None and _fed._pss_bytes(procs[0]) == 0
        assert _fed.process_tree(procs[0]) == []
    finally:
        for s in sleepers:
            s.kill()
            s.wait()


def test_summaries_skip_the_warm_up_round():
    run = _fake_run({})[0]("x", ["federation.num_clients=10", "federation.rounds=3"], None)
    s = _fed.summarize_runs([run])
    assert s["steady_rounds"] == 2 and s["round_s"] == 10.0 and s["first_round_s"] == 30.0
    assert s["client_round_s"] == 1.0 and s["client_round_cpu_s"] == 2.0
    one = _fake_run({})[0]("x", ["federation.num_clients=10", "federation.rounds=1"], None)
    assert _fed.summarize_runs([one])["round_s"] == 30.0  # nothing else to use
    assert _fed.ratio(3.0, 2.0) == 1.5 and _fed.ratio(None, 2.0) is None
    assert _fed.ratio(1.0, 0.0) is None


# ---- real federations on tiny sizes (Ray) ---------------------------------------------------
@pytest.fixture(scope="module")
def shared_work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-work")  # one teacher for every suite below


@pytest.mark.slow
def test_he_suite_runs_real_federations(shared_work_dir, capsys):
    out = bench.main(["suite=he", "parts=[round]", "clients=[2]", "rounds=2", "he=ckks4096",
                      f"work_dir={shared_work_dir}", TINY_ARG])  # fmt: skip
    rows = {r["he"]: r for r in out["round"]["rows"]}
    for mode in ("ckks4096", "off"):
        r = rows[mode]
        assert r["clients_per_round"] == 2 and r["steady_rounds"] == 1
        assert r["round_s"] > 0 and r["round_cpu_s"] > 0 and r["first_round_s"] > 0
        assert r["peak_rss_bytes"] > 1e8 and r["peak_pss_bytes"] > 0
    (q,) = out["round"]["ratios"]
    assert q["round_ratio"] == pytest.approx(rows["ckks4096"]["round_s"] / rows["off"]["round_s"])
    # lean uploads (seeded symmetric, complex packing, zstd): dearer than plaintext float64
    # but within 2x of it, i.e. about 2x float32 per value
    up, plain = rows["ckks4096"]["bytes_up_per_round"], rows["off"]["bytes_up_per_round"]
    assert plain < up < 2 * plain
    assert 8.0 < rows["ckks4096"]["bytes_per_uploaded_value"] < 16.0
    assert "| 2 |" in capsys.readouterr().err


@pytest.mark.slow
def test_flower_suite_runs_real_federations(shared_work_dir):
    out = bench.main(["suite=flower", "clients=[2]", "rounds=1", f"work_dir={shared_work_dir}",
                      TINY_ARG])  # fmt: skip
    rows = {r["strategy"]: r for r in out["rows"]}
    assert rows["keco"]["round_s"] > 0 and rows["fedavg"]["round_s"] > 0
    assert out["ratios"][0]["round_ratio"] == pytest.approx(
        rows["keco"]["round_s"] / rows["fedavg"]["round_s"]
    )


@pytest.mark.slow
def test_scale_suite_runs_a_real_federation(shared_work_dir):
    out = bench.main(["suite=scale", "clients=[3]", "fraction=0.5", "rounds=2",
                      f"work_dir={shared_work_dir}", TINY_ARG])  # fmt: skip
    (row,) = out["rows"]
    assert row["clients"] == 3 and row["clients_per_round"] == 2 and row["polling"] == "fast"
    assert row["client_round_s"] > 0 and row["client_round_cpu_s"] > 0
    assert row["peak_rss_bytes"] > 1e8 and row["startup_s"] > 0
    assert out["targets_met"] == {"peak_rss_at_3_le_8GB": True}


def test_targets_table_and_unknown_suite(capsys):
    table = bench.targets_table({"a": {"targets_met": {"x": True, "y": None, "z": False}}, "b": {}})
    assert "| a | x | yes |" in table and "| a | y | – |" in table and "| a | z | no |" in table
    assert set(bench.available_suites()) == {"flower", "gym", "he", "infer", "scale", "simulator"}
    with pytest.raises(SystemExit) as end:
        bench.main(["suite=nope"])
    assert end.value.code == 2 and "valid suites" in capsys.readouterr().err


def test_gym_suite_compares_the_batched_vector_env_with_sync(capsys):
    out = bench.run_suite("gym", {"num_envs": 4, "steps": 30, "repeats": 1})
    assert out["num_envs"] == 4 and out["vector_steps_per_s"] > 0 and out["sync_steps_per_s"] > 0
    assert out["vector_over_sync"] == pytest.approx(
        out["vector_steps_per_s"] / out["sync_steps_per_s"], rel=0.01
    )
    assert "SyncVectorEnv of MECEnv" in capsys.readouterr().err

"""The KECO federation end to end: the real Hydra entry point, Ray simulation and CKKS keys.

Each run is a subprocess (``python -m experiments.run``) so that Ray's processes end with it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.crypto import holds_secret_key
from common.fed.settings import default_client_dir
from tests.keycheck import assert_no_secret_key

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "experiment=federation", "scenario=qeco", "scenario.n_devices=8", "scenario.n_slots=30",
    "federation.num_clients=3", "federation.rounds=2", "model=mlp", "model.hidden=[32]",
    "experiment.teacher_training.episodes=2", "experiment.teacher_training.steps=100",
    "experiment.final_eval_episodes=2", "strategy.local.episodes=1", "strategy.local.epochs=3",
    "strategy.local.eval_episodes=1", "strategy.proxy.size=64",
]  # fmt: skip


def run(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *TINY, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# 2 of the 3 clients train in each round: the runs below must sample the same ones (same seed)
PARTIAL = "federation.fraction_train=0.5"


@pytest.fixture(scope="module")
def ckks_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ckks")
    r = run(run_dir, PARTIAL)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, r


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("plain")
    r = run(run_dir, "he=off", PARTIAL)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, r


@pytest.mark.slow
def test_keco_with_ckks_end_to_end(ckks_run):
    run_dir, r = ckks_run
    assert f"report: {run_dir}/report.md" in r.stdout
    res = results(run_dir)
    assert [row["round"] for row in res["rounds"]] == [1, 2]
    for row in res["rounds"]:
        assert row["clients_train"] == row["set_x"] == 2 and row["rejected"] == 0
        # seeded CKKS uploads: N = 8,192 values per ciphertext at ~8.02 bytes per value
        per_client = row["values_up"] / 2
        chunks = 2 * -(-per_client // 8192)
        assert row["bytes_up"] == pytest.approx(chunks * 8.025 * 8192, rel=0.005)
        assert row["bytes_down"] > row["bytes_up"]  # sums are not seeded: twice the bytes
        assert np.isfinite(row["train_loss"]) and np.isfinite(row["eval_qoe"])
    for name in ("student", "teacher", "all_local", "random", "oracle"):
        assert name in res["policies"] and "qoe" in res["policies"][name]
    assert res["policies"]["student"]["params"] > 0 and res["policies"]["student"]["infer_us"] > 0
    # the server's run directory holds the public context only; the secret one is the clients'
    clients = Path(default_client_dir(run_dir))
    assert assert_no_secret_key(run_dir, clients / "secret.ctx") > 5
    assert (run_dir / "public.ctx").read_bytes() == (clients / "public.ctx").read_bytes()
    assert holds_secret_key(clients / "secret.ctx")
    for name in ("report.md", "rounds_qoe.png", "rounds_bytes.png", "policies.png"):
        assert (run_dir / name).exists()


@pytest.mark.slow
def test_encryption_does_not_change_learning(ckks_run, plain_run):
    """With per-sample knowledge on the proxy set (the default): every round's losses and
    QoE, and the final student, are the same with CKKS as in plaintext (canonical decoding)."""
    he, plain = results(ckks_run[0]), results(plain_run[0])
    assert he["config"]["resolved"]["strategy"]["knowledge"] == "proxy"
    for a, b in zip(he["rounds"], plain["rounds"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
        assert a["eval_qoe"] == pytest.approx(b["eval_qoe"], rel=1e-9)
        # a seeded ciphertext costs about what the int64 plaintext does (plus chunk padding)
        assert b["bytes_up"] < a["bytes_up"] < 2 * b["bytes_up"]
    q_he, q_plain = he["policies"]["student"]["qoe"], plain["policies"]["student"]["qoe"]
    assert abs(q_he - q_plain) <= 0.01 * abs(q_plain)


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tmp_path, plain_run):
    straight, resumed = plain_run[0], tmp_path / "resumed"
    # with partial participation too: the resumed launch samples round 2's clients as the
    # uninterrupted one did (simulated node ids are the same in every launch)
    assert run(resumed, "he=off", PARTIAL, "federation.rounds=1").returncode == 0
    r = run(resumed, "he=off", PARTIAL, "experiment.resume=true")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = results(straight), results(resumed)
    keys = ("train_loss", "eval_qoe", "eval_drop_ratio", "bytes_up", "set_x")
    for ra, rb in zip(a["rounds"], b["rounds"], strict=True):
        assert {k: ra[k] for k in keys} == {k: rb[k] for k in keys}
    assert a["policies"]["student"]["qoe"] == b["policies"]["student"]["qoe"]
    from server.loop import load_checkpoint

    (ra, wa, _), (rb, wb, _) = load_checkpoint(straight), load_checkpoint(resumed)
    assert ra == rb == 2 and set(wa.keys()) == set(wb.keys())
    for k in wa.keys():
        np.testing.assert_array_equal(wa[k].numpy(), wb[k].numpy())


@pytest.mark.slow
def test_deadline_makes_clients_late_and_delta_is_applied(tmp_path):
    from common.config import compose
    from common.fed import build_student, client_profile, compute_seconds
    from common.fed.settings import federated_from_dict
    from common.models import build_for_scenario, count_params

    # a large teacher makes the logits a large part of a client's work, so that one deadline
    # can leave two fast clients on time (x), one slow client with fresh logits (v) and the
    # slowest with only the stale logits of its previous round (u)
    extra = ["he=off", "federation.heterogeneity=1.0", "federation.num_clients=4",
             "strategy.local.speed_gflops=0.2", "strategy.local.buffer_size=60",
             "model.hidden=[512,512]"]  # fmt: skip
    cfg = federated_from_dict(compose(TINY + extra), tmp_path)
    speeds = sorted(
        client_profile(cfg.scenario, i, 1.0, 0.2, cfg.seed).speed_gflops for i in range(4)
    )
    p_student = count_params(build_student(cfg))
    p_teacher = count_params(build_for_scenario(cfg.teacher, cfg.scenario))
    proxy = cfg.strategy.proxy.size  # fresh logits are computed on the proxy states
    times = [
        compute_seconds(60, cfg.strategy.local.epochs, p_student, p_teacher, s, proxy)
        for s in speeds
    ]
    (logits_u, _), (logits_v, train_v), (_, train_x) = times[0], times[1], times[2]
    low, high = max(logits_v, train_x), min(train_v, logits_u)
    assert low < high  # this seed's speeds admit such a deadline
    r = run(tmp_path, *extra, f"strategy.deadline_s={(low * high) ** 0.5}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = results(tmp_path)["rounds"]
    last = rows[-1]
    assert (last["set_x"], last["set_u"], last["set_v"]) == (2, 1, 1)  # Δ = u − v is applied
    assert last["delta_formed"] == 1.0
    assert rows[0]["set_u"] == 0 and rows[0]["delta_formed"] == 0.0  # no stale logits yet
    # the round lasts as long as its slowest used client (here a late one's logits) + upload
    assert all(row["sim_seconds"] > 0 for row in rows)


def test_bad_config_fails_before_ray_starts(tmp_path):
    r = run(tmp_path, "federation.num_clients=0")
    assert r.returncode == 2
    assert "federation.num_clients" in r.stderr
    assert not Path(default_client_dir(tmp_path)).exists()  # nothing was prepared
    r = run(tmp_path, "strategy=fedavg")  # FedAvg is plaintext: he must be off
    assert r.returncode == 2 and "he=off" in r.stderr

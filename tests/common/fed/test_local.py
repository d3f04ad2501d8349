"""The KECO local round: buffer, roles under a deadline, soft-label tables, training."""

import dataclasses

import numpy as np
import pytest
import torch

from common.config import compose
from common.fed import (
    LocalState,
    build_student,
    client_profile,
    knowledge_shape,
    train_on_schedule,
    train_round,
)
from common.fed.local import (
    round_loads,
    round_worlds,
    schedule_budget,
)
from common.fed.settings import federated_from_dict
from common.mec import TaskDataset, n_features
from common.models import flatten_params
from common.protocol import ROLE_FRESH, ROLE_ON_TIME, ROLE_STALE

SMALL = [
    "experiment=federation", "scenario=qeco", "scenario.n_devices=6", "scenario.n_slots=20",
    "strategy.local.episodes=1", "strategy.local.epochs=2", "strategy.local.buffer_size=150",
    "strategy.proxy.size=48",
]  # fmt: skip


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return federated_from_dict(compose(SMALL), tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def table_cfg(tmp_path_factory):
    raw = compose([*SMALL, "strategy.knowledge=class_table"])
    return federated_from_dict(raw, tmp_path_factory.mktemp("run"))


def setup(cfg):
    torch.manual_seed(0)
    w0 = flatten_params(build_student(cfg))
    return w0, np.full(knowledge_shape(cfg), 0.5), client_profile(cfg.scenario, 0, 0.5, 2.0, 0)


def rows(cfg, n, label, value=1.0):
    """``n`` dataset rows with feature value ``value`` and the given labels."""
    m, k = cfg.scenario.n_edges, cfg.scenario.history_slots
    costs = np.zeros((n, m + 1), np.float32)
    costs[np.arange(n), label] = -1.0
    return TaskDataset(
        np.full((n, n_features(m)), value, np.float32), np.zeros((n, k, m), np.float32),
        np.asarray(label, np.int64), costs, np.zeros(n, np.int64),
    )  # fmt: skip


def test_buffer_is_bounded_and_persists(cfg, tmp_path):
    state = LocalState.empty(cfg.scenario)
    state.append(rows(cfg, 100, np.arange(100) % 3), cap=60)
    state.append(rows(cfg, 30, np.full(30, 5), 2.0), cap=60)
    assert len(state.label) == 60 and (state.label[-30:] == 5).all()  # newest kept
    assert state.costs.shape == (60, cfg.scenario.n_edges + 1)
    assert (state.costs[-30:, 5] == -1).all()
    state.stale_table, state.stale_n, state.stale_round = np.eye(6), 42, 3
    state.save(tmp_path / "s.npz")
    back = LocalState.load(tmp_path / "s.npz", cfg.scenario)
    np.testing.assert_array_equal(back.features, state.features)
    np.testing.assert_array_equal(back.costs, state.costs)
    np.testing.assert_array_equal(back.stale_table, np.eye(6))
    assert (back.stale_n, back.stale_round) == (42, 3)
    assert len(LocalState.load(tmp_path / "missing.npz", cfg.scenario).label) == 0


def test_on_time_round_trains_and_uploads_everything(cfg, table_cfg):
    for run in (cfg, table_cfg):
        w0, g, prof = setup(run)
        state = LocalState.empty(run.scenario)
        r = train_round(run, prof, state, w0, g, server_round=2, delta=0.75, temperature=2.0,
                        deadline_s=float("inf"), teacher=None)  # fmt: skip
        assert r.role == ROLE_ON_TIME and r.model is not None
        assert r.model.shape == w0.shape and not np.allclose(r.model, w0)
        assert r.num_examples == len(state.label) > 0
        # proxy knowledge: the logits on the 48 shared proxy states; else the 6 x 6 table
        assert r.soft_labels.shape == g.shape == knowledge_shape(run)
        assert np.isfinite(r.soft_labels).all() and np.isfinite(r.metrics["train_loss"])
        assert state.stale_round == 2  # these logits are the stale ones of a later late round
    assert knowledge_shape(cfg) == (48, 6)
    # class table: classes the client never labelled keep the global row
    seen = np.bincount(state.label, minlength=g.shape[0]) > 0
    np.testing.assert_array_equal(r.soft_labels[~seen], g[~seen])


def test_roles_follow_the_deadline(cfg):
    w0, g, prof = setup(cfg)
    state = LocalState.empty(cfg.scenario)
    # no stale logits yet: a late client sends fresh ones
    r1 = train_round(cfg, prof, state, w0, g, server_round=1, delta=0.5, temperature=1.0,
                     deadline_s=1e-12, teacher=None)  # fmt: skip
    assert r1.role == ROLE_FRESH and r1.model is None and r1.logits_round == 1
    # later, still too slow even for logits: the stale logits of round 1 go up (set u)
    r2 = train_round(cfg, prof, state, w0, g, server_round=2, delta=0.5, temperature=1.0,
                     deadline_s=1e-12, teacher=None)  # fmt: skip
    assert r2.role == ROLE_STALE and r2.logits_round == 1
    np.testing.assert_array_equal(r2.soft_labels, r1.soft_labels)
    assert r2.num_examples == r1.num_examples
    # a deadline between the logits time and the training time (7x it here; the buffer at
    # most doubles between rounds): fresh logits (set v)
    t_logits = r2.metrics["compute_s"]
    r3 = train_round(cfg, prof, state, w0, g, server_round=3, delta=0.5, temperature=1.0,
                     deadline_s=t_logits * 3, teacher=None)  # fmt: skip
    assert r3.role == ROLE_FRESH and r3.logits_round == 3


def test_a_late_weights_only_client_reports_its_training_time(cfg):
    """FedAvg has no logits to fall back on: a late client's compute time is its training's,
    above the deadline, so the server can tell it from an on-time reply (no update either way
    would crash Flower's FedAvg)."""
    run = dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, name="fedavg"))
    w0, _, prof = setup(run)

    def round_under(deadline_s: float):
        state = LocalState.empty(run.scenario)
        return train_round(run, prof, state, w0, None, server_round=2, delta=1.0,
                           temperature=1.0, deadline_s=deadline_s, teacher=None)  # fmt: skip

    on_time = round_under(float("inf"))
    deadline = on_time.metrics["compute_s"] / 2
    late = round_under(deadline)
    assert on_time.model is not None and late.model is None
    assert late.metrics["compute_s"] == on_time.metrics["compute_s"] > deadline


def test_round_is_deterministic(cfg):
    w0, g, prof = setup(cfg)
    runs = []
    for _ in range(2):
        state = LocalState.empty(cfg.scenario)
        r = train_round(cfg, prof, state, w0, g, server_round=2, delta=0.6, temperature=2.0,
                        deadline_s=float("inf"), teacher=None)  # fmt: skip
        runs.append(r)
    np.testing.assert_array_equal(runs[0].model, runs[1].model)
    np.testing.assert_array_equal(runs[0].soft_labels, runs[1].soft_labels)


def test_device_state_files_ignore_leftovers(cfg, tmp_path):
    from client.device import Device

    dev = Device.__new__(Device)  # only the state-file logic, no keys or teacher needed
    dev.cfg, dev.partition_id, dev.state_dir = cfg, 0, tmp_path
    state = LocalState.empty(cfg.scenario)
    state.append(rows(cfg, 3, np.arange(3)), cap=10)
    # an older run left rounds 9 and 10, and an interrupted save left a temporary file
    for r in (9, 10):
        LocalState.empty(cfg.scenario).save(tmp_path / f"client-0-r{r}.npz")
    (tmp_path / ".client-0-r11.tmp.npz").write_bytes(b"partial")
    assert len(dev._load_state(1).label) == 0  # nothing before round 1
    dev._save_state(state, 1)
    assert len(dev._load_state(2).label) == 3  # round 1's state, not the old run's
    assert sorted(p.name for p in tmp_path.glob("client-*")) == ["client-0-r1.npz"]
    dev._save_state(state, 2)
    dev._save_state(state, 3)
    assert sorted(p.name for p in tmp_path.glob("client-*")) == [
        "client-0-r2.npz", "client-0-r3.npz",
    ]  # fmt: skip


def test_data_schedule_cycles_loads_and_its_budget_is_exact(tmp_path):
    raw = compose([
        *SMALL, "federation.num_clients=2", "federation.rounds=2", "strategy.local.episodes=2",
        "strategy.local.train_loads=[0.5,1.0,2.0]",
    ])  # fmt: skip
    cfg = federated_from_dict(raw, tmp_path)
    assert round_loads(cfg, 0, 1) == [0.5, 1.0] and round_loads(cfg, 1, 1) == [1.0, 2.0]
    assert round_loads(cfg, 0, 2) == [2.0, 0.5]  # the cycle goes on over rounds
    profiles = [client_profile(cfg.scenario, pid, 0.5, 2.0, 0) for pid in range(2)]
    # a world at twice the load gets more tasks (the multiplier scales the arrival rates)
    low, high = (w for w in round_worlds(cfg, profiles[1], 1) if w.devices.arrival_prob is not None)
    assert high.tasks(cfg.scenario) > low.tasks(cfg.scenario)
    # the federation's clients, all on time, use exactly the budget the schedule predicts
    w0 = flatten_params(build_student(cfg))
    g = np.zeros((cfg.scenario.n_edges + 1,) * 2)
    states = [LocalState.empty(cfg.scenario) for _ in profiles]
    used = {"episodes": 0, "steps": 0}
    for server_round in (1, 2):
        for profile, state in zip(profiles, states, strict=True):
            r = train_round(cfg, profile, state, w0, g, server_round=server_round, delta=1.0,
                            temperature=1.0, deadline_s=float("inf"), teacher=None)  # fmt: skip
            used["episodes"] += int(r.metrics["episodes"])
            used["steps"] += int(r.metrics["train_steps"])
    assert used == schedule_budget(cfg, profiles)
    assert used["episodes"] == 2 * 2 * 2
    # the centralised learner pools the same data and takes the same number of steps
    torch.manual_seed(0)
    assert train_on_schedule(cfg, build_student(cfg), profiles) == used

import numpy as np
import pytest
import torch

from common.distill import TargetConfig
from common.mec import collect_dataset, feature_scale, n_features
from common.mec import features as fl
from common.mec.policies import make_policy
from common.mec.scenario import load_scenario
from common.models import NetPolicy, build_for_scenario
from common.models.nets import ModelConfig
from common.training import (
    distill_student,
    evaluate_episodes,
    normalize,
    permute_edges_batch,
    seed_everything,
    teacher_outputs,
    train_d3qn,
    train_imitation,
)
from common.training.d3qn import D3QNConfig, ReplayMemory, _transitions
from common.training.distill_offline import DistillConfig
from common.training.imitation import ImitationConfig

TINY = dict(n_devices=6, n_slots=20)
SMALL_MLP = ModelConfig(arch="mlp", hidden=(32,))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_imitation_loss_goes_down_and_beats_chance():
    scenario = load_scenario("seed001", **TINY)
    seed_everything(0)
    net = build_for_scenario(SMALL_MLP, scenario)
    cfg = ImitationConfig(
        episodes=6, dagger_rounds=1, steps=150, batch_size=64, lr=3e-3,
        targets=TargetConfig(kind="hard", permute_edges=False),
    )  # fmt: skip
    result = train_imitation(net, scenario, cfg, seed=0)
    assert len(result.losses) == 150 + 75
    first, last = np.mean(result.losses[:20]), np.mean(result.losses[130:150])
    assert last < 0.8 * first
    assert result.accuracy > 1 / 6 + 0.1  # clearly above chance over 6 actions
    assert result.samples > 0


def test_imitation_is_deterministic_under_a_seed():
    scenario = load_scenario("seed001", **TINY)
    runs = []
    for _ in range(2):
        seed_everything(3)
        net = build_for_scenario(SMALL_MLP, scenario)
        cfg = ImitationConfig(episodes=2, dagger_rounds=0, steps=20, batch_size=32)
        runs.append(train_imitation(net, scenario, cfg, seed=3).losses)
    assert runs[0] == runs[1]


def test_offline_distillation_fits_the_teacher():
    scenario = load_scenario("seed001", **TINY)
    seed_everything(0)
    teacher = build_for_scenario(ModelConfig(arch="lstm_dueling", hidden=(40,)), scenario)
    data = normalize(collect_dataset(scenario, make_policy("greedy"), 4, seed=1), scenario)
    targets = teacher_outputs(teacher, data)
    student = build_for_scenario(
        ModelConfig(arch="lstm_dueling", hidden=(40,)).scaled(0.4), scenario
    )
    seen = []
    # a random teacher is not symmetric in the ENs: no relabelling
    cfg = DistillConfig(loss="mse", steps=300, batch_size=64, lr=3e-3, permute_edges=False)
    losses = distill_student(
        student, data, targets, cfg, 0,
        checkpoints=[100, 300], on_checkpoint=lambda step, net: seen.append(step),
    )  # fmt: skip
    assert seen == [100, 300]
    assert np.mean(losses[-30:]) < 0.2 * np.mean(losses[:10])
    # the KECO hard/soft loss runs through the same loop
    kd = DistillConfig(loss="kd", steps=30, batch_size=32)
    kd_losses = distill_student(student, data, targets, kd, 0)
    assert len(kd_losses) == 30 and all(np.isfinite(kd_losses))


def test_transitions_link_each_devices_consecutive_tasks():
    # one episode, 2 devices, 4 slots; device 0 has tasks at t=0, 2; device 1 at t=1
    mask = np.zeros((4, 1, 2), bool)
    mask[0, 0, 0] = mask[2, 0, 0] = mask[1, 0, 1] = True
    feats = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 1, 2, 3)
    hists = np.arange(4 * 2 * 2, dtype=np.float32).reshape(4, 1, 2, 2)
    actions = np.array([[[1, -1], [-1, 2], [0, -1], [-1, -1]]])
    rewards = np.array([[[5.0, np.nan], [np.nan, 7.0], [3.0, np.nan], [np.nan, np.nan]]])
    f, h, a, r, f2, h2, done = _transitions(feats, hists, mask, actions, rewards)
    rows = {(float(x[0]), float(y[0])): (int(aa), float(rr), float(d)) for x, y, aa, rr, d in
            zip(f, f2, a, r, done, strict=True)}  # fmt: skip
    # t=0 device 0 → next state is its task at t=2, not done
    assert rows[(feats[0, 0, 0, 0], feats[2, 0, 0, 0])] == (1, 5.0, 0.0)
    assert rows[(feats[2, 0, 0, 0], feats[2, 0, 0, 0])] == (0, 3.0, 1.0)
    assert rows[(feats[1, 0, 1, 0], feats[1, 0, 1, 0])] == (2, 7.0, 1.0)


def test_replay_memory_wraps_around():
    memory = ReplayMemory(5, 2, (1, 1))
    n = 7
    memory.add(np.ones((n, 2)), np.ones((n, 1, 1)), np.arange(n), np.arange(n, dtype=float),
               np.ones((n, 2)), np.ones((n, 1, 1)), np.zeros(n))  # fmt: skip
    assert len(memory) == 5 and sorted(memory.a.tolist()) == [2, 3, 4, 5, 6]


def test_d3qn_tiny_run_learns():
    scenario = load_scenario("seed001", **TINY)
    seed_everything(0)
    net = build_for_scenario(ModelConfig(arch="lstm_dueling", hidden=(32,)), scenario)
    # γ = 0 makes the TD target the task's own reward, so the loss must fall as Q fits it
    cfg = D3QNConfig(
        episodes=16, parallel_episodes=4, batch_size=64, updates_per_episode=10, gamma=0.0,
        target_every=20, heuristic_prob=0.5, buffer_size=5000, lr=3e-3,
    )  # fmt: skip
    result = train_d3qn(net, scenario, cfg, seed=0)
    assert len(result.episode_qoe) == 4 and len(result.losses) == 160
    assert np.mean(result.losses[-40:]) < 0.5 * np.mean(result.losses[:40])
    fs, hs = feature_scale(scenario)
    learned, per = evaluate_episodes(scenario, NetPolicy(net, fs, hs), 4, seed=5)
    local, _ = evaluate_episodes(scenario, make_policy("all_local"), 4, seed=5)
    assert per["qoe"].shape == (4,) and learned["qoe"] > local["qoe"]


def test_d3qn_with_bootstrapping_runs_and_is_finite():
    scenario = load_scenario("seed001", **TINY)
    seed_everything(1)
    net = build_for_scenario(SMALL_MLP, scenario)
    cfg = D3QNConfig(episodes=4, parallel_episodes=2, batch_size=32, updates_per_episode=5,
                     target_every=3, heuristic_prob=0.0)  # fmt: skip
    result = train_d3qn(net, scenario, cfg, seed=1)
    assert len(result.losses) == 20 and all(np.isfinite(result.losses))


def test_per_episode_metrics_agree_with_the_overall_ones():
    scenario = load_scenario("seed001", **TINY)
    overall, per = evaluate_episodes(scenario, make_policy("greedy"), 5, seed=2, batch=2)
    assert per["tasks"].sum() == overall["tasks"]
    assert per["qoe_episode"].mean() == pytest.approx(overall["qoe_episode"])
    assert (per["qoe"] * per["tasks"]).sum() / per["tasks"].sum() == pytest.approx(overall["qoe"])


def test_edge_relabelling_permutes_inputs_targets_and_labels_together():
    m, batch = 4, 64
    rng = np.random.default_rng(0)
    f = torch.from_numpy(rng.random((batch, n_features(m))).astype(np.float32))
    h = torch.from_numpy(rng.random((batch, 3, m)).astype(np.float32))
    q = torch.softmax(torch.from_numpy(rng.random((batch, m + 1)).astype(np.float32)), 1)
    y = torch.from_numpy(rng.integers(0, m + 1, batch))
    pf, ph, pq, py = permute_edges_batch(f, h, q, y, np.random.default_rng(1))
    assert not torch.equal(pf, f)  # the augmentation is applied
    moved = 0
    for b in range(batch):
        backlog = fl.edge_block("backlog_mbit", m)
        # recover the permutation from the history columns (all distinct)
        perm = [int(np.flatnonzero(np.isclose(h[b, 0].numpy(), v))[0]) for v in ph[b, 0].numpy()]
        moved += perm != list(range(m))
        torch.testing.assert_close(pf[b, :6], f[b, :6])
        for name in fl.EDGE_FIELDS:
            cols = fl.edge_block(name, m)
            torch.testing.assert_close(pf[b, cols], f[b, cols][perm])
        torch.testing.assert_close(pq[b, 1:], q[b, 1:][perm])
        assert pq[b, 0] == q[b, 0]
        # the label names the same (old) action in the new numbering
        old = int(y[b])
        assert int(py[b]) == (0 if old == 0 else perm.index(old - 1) + 1)
        assert pf[b, backlog].sum() == pytest.approx(float(f[b, backlog].sum()), rel=1e-6)
    assert moved > batch // 2


def test_cost_aware_imitation_learns_and_reports_optimal_action_rate():
    scenario = load_scenario("seed001", **TINY)
    seed_everything(0)
    net = build_for_scenario(SMALL_MLP, scenario)
    cfg = ImitationConfig(episodes=6, dagger_rounds=0, steps=200, batch_size=64, lr=3e-3)
    result = train_imitation(net, scenario, cfg, seed=0)
    # the cross-entropy to soft targets has their entropy as its floor: it must fall towards it
    assert np.mean(result.losses[-20:]) < np.mean(result.losses[:20]) - 0.2
    # it picks one of the oracle's best actions more often than any fixed action does
    data = collect_dataset(scenario, make_policy("oracle"), 6, seed=0)
    best = data.costs <= data.costs.min(1, keepdims=True) + 1e-6
    assert best.mean(0).max() + 0.1 < result.accuracy <= 1.0

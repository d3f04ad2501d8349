"""DDPG-based offloading (common.training.ddpg): schedule, shapes, determinism and learning."""

import dataclasses

import numpy as np
import pytest
import torch

from common.mec import MECBatch, evaluate_policy, feature_scale, n_features
from common.mec.policies import make_policy
from common.mec.scenario import load_scenario
from common.models import NetPolicy
from common.training import DDPGResult, train_ddpg
from common.training.ddpg import DDPGConfig, DDPGCritic, build_actor, noise_std

TINY = dict(n_devices=6, n_slots=20)
QUICK = DDPGConfig(
    episodes=4, parallel_episodes=2, updates_per_episode=5, batch_size=32, hidden=(16,)
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_noise_decays_linearly_then_stays_flat():
    cfg = DDPGConfig(episodes=10, noise_start=0.5, noise_end=0.1, noise_decay_fraction=0.5)
    assert noise_std(cfg, 0) == pytest.approx(0.5)
    assert noise_std(cfg, 2.5) == pytest.approx(0.3)  # halfway through the 5 decay episodes
    assert noise_std(cfg, 5) == pytest.approx(0.1)
    assert noise_std(cfg, 9) == pytest.approx(0.1)
    flat = dataclasses.replace(cfg, noise_end=0.5)
    assert {noise_std(flat, i) for i in range(10)} == {0.5}
    # the training loop uses the schedule once per batch of parallel episodes
    scenario = load_scenario("seed001", **TINY)
    run = dataclasses.replace(QUICK, episodes=6, noise_start=0.6, noise_end=0.0)
    result = train_ddpg(scenario, dataclasses.replace(run, noise_decay_fraction=1.0), seed=0)
    assert result.noise == pytest.approx([0.6, 0.4, 0.2])


def test_shapes_and_the_netpolicy_interface():
    scenario = load_scenario("seed001", **TINY)
    m, k = scenario.n_edges, scenario.history_slots
    result = train_ddpg(scenario, QUICK, seed=0)
    assert isinstance(result, DDPGResult) and result.net is result.actor
    iters = QUICK.episodes // QUICK.parallel_episodes
    steps = iters * QUICK.updates_per_episode * QUICK.parallel_episodes
    assert len(result.episode_qoe) == len(result.noise) == iters
    assert len(result.critic_losses) == len(result.actor_losses) == steps
    assert all(np.isfinite(result.critic_losses + result.actor_losses))

    features, history = torch.rand(7, n_features(m)), torch.rand(7, k, m)
    with torch.no_grad():
        scores = result.actor(features, history)
        q = result.critic(features, history, scores)
    assert scores.shape == (7, m + 1) and scores.abs().max() <= 1.0  # bounded (tanh) scores
    assert q.shape == (7,)
    assert isinstance(result.critic, DDPGCritic)

    feat_scale, hist_scale = feature_scale(scenario)
    policy = NetPolicy(result.actor, feat_scale, hist_scale)
    obs = MECBatch(scenario, 3).reset(seed=1)
    actions = policy(obs)
    assert actions.shape == (3, scenario.n_devices) and actions.min() >= 0 and actions.max() <= m
    assert evaluate_policy(scenario, policy, 2, seed=3)["tasks"] > 0


def test_training_is_deterministic_under_a_seed():
    scenario = load_scenario("seed001", **TINY)
    runs, logs = [], []
    for _ in range(2):
        seen: list[tuple[str, float, int]] = []
        runs.append(train_ddpg(scenario, QUICK, seed=7, log=lambda *x, s=seen: s.append(x)))
        logs.append(seen)
    a, b = runs
    for x, y in zip(a.actor.state_dict().values(), b.actor.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a.critic.state_dict().values(), b.critic.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    assert a.critic_losses == b.critic_losses and a.episode_qoe == b.episode_qoe
    assert logs[0] == logs[1]
    assert {name for name, _, _ in logs[0]} == {
        "charts/train_qoe", "charts/noise_std", "losses/critic_loss", "losses/actor_loss",
    }  # fmt: skip
    other = train_ddpg(scenario, QUICK, seed=8)
    assert other.critic_losses != a.critic_losses


def test_a_short_training_learns_to_use_the_fast_edge_node():
    """One fast edge node among slow ones: ``random`` and the untrained actor (a near-constant
    argmax) send many tasks to slow nodes; a few episodes of DDPG must find the fast one."""
    scenario = load_scenario("seed001", **TINY, edge_ghz=[42.0, 3.0, 3.0, 3.0, 3.0])
    cfg = DDPGConfig(
        episodes=24, parallel_episodes=4, updates_per_episode=20, batch_size=64,
        hidden=(32, 32), actor_lr=1e-3, critic_lr=3e-3,
    )  # fmt: skip
    feat_scale, hist_scale = feature_scale(scenario)
    torch.manual_seed(0)
    untrained = build_actor(scenario, cfg)  # the initialisation train_ddpg starts from
    result = train_ddpg(scenario, cfg, seed=0)
    assert np.mean(result.critic_losses[-20:]) < 0.5 * np.mean(result.critic_losses[:20])

    def qoe(policy) -> float:
        return evaluate_policy(scenario, policy, 10, seed=777)["qoe"]

    learned = qoe(NetPolicy(result.actor, feat_scale, hist_scale))
    assert learned > qoe(make_policy("random")) + 5.0
    assert learned > qoe(NetPolicy(untrained, feat_scale, hist_scale)) + 5.0


def test_batches_without_tasks_are_skipped():
    scenario = load_scenario("seed001", n_devices=3, n_slots=5, arrival_prob=0.0)
    result = train_ddpg(scenario, QUICK, seed=0)
    assert result.critic_losses == [] and len(result.episode_qoe) == 2

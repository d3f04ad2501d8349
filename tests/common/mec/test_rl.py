"""Stable-Baselines3 trains PPO on the registered environment (the ``rl`` extra) and beats the
``random`` policy on held-out episodes.

The world is small so that a short budget suffices: 2 devices under a heavy load
(``arrival_prob=0.5``), where sending every task to an edge node overloads the uplink and keeping
every task local overloads the CPU; uniformly random choices drop many tasks, and a policy that
reads its queues does about twice as well (``greedy``)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import common.mec  # noqa: F401  (registers the ids)
from common.mec.registration import ENV_ID

WORLD = dict(scenario="qeco", n_devices=2, arrival_prob=0.5, normalize=True)
BUDGET = 40_000  # environment steps (slots); about 40 s on one core


def returns(env, act, episodes=10, seed=1000):
    out = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            obs, r, done, _, _ = env.step(act(obs))
            total += r
        out.append(total)
    return float(np.mean(out))


@pytest.mark.slow
def test_ppo_on_the_registered_env_beats_random():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same numbers in every run
    try:
        venv = VecNormalize(
            make_vec_env(ENV_ID, n_envs=8, seed=0, env_kwargs=WORLD),
            norm_obs=False, norm_reward=True, gamma=0.9,
        )  # fmt: skip
        model = PPO(
            "MultiInputPolicy", venv, n_steps=128, batch_size=256, gamma=0.9, seed=0,
            device="cpu",
        )  # fmt: skip
        model.learn(BUDGET)
        env = gym.make(ENV_ID, **WORLD)
        ppo = returns(env, lambda obs: model.predict(obs, deterministic=True)[0])
        random = returns(env, lambda obs: env.unwrapped.policy_action("random"))
        greedy = returns(env, lambda obs: env.unwrapped.policy_action("greedy"))
    finally:
        torch.set_num_threads(threads)
    print(f"episode return: ppo {ppo:.1f}, random {random:.1f}, greedy {greedy:.1f}")
    assert ppo > 1.5 * random
    assert ppo < greedy * 1.2  # a sanity bound: the returns are on the same scale

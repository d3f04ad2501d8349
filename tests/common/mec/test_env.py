"""The Gymnasium wrapper: API checks and a determinism rollout."""

import numpy as np
from gymnasium.utils.env_checker import check_env

from common.config import load_scenario
from common.mec.env import MECEnv


def make():
    return MECEnv(load_scenario("qeco", n_devices=6, n_edges=3, n_slots=15))


def test_check_env():
    check_env(make(), skip_render_check=True)


def rollout(seed):
    env = make()
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, r, done, trunc, info = env.step(env.action_space.sample())
        assert not trunc
        total += r
        steps += 1
    return total, steps, info["metrics"]


def test_determinism_rollout():
    a, b, c = rollout(3), rollout(3), rollout(4)
    assert a[0] == b[0] and a[2] == {**b[2], "slots_per_s": a[2]["slots_per_s"]}
    assert a[1] == 15 + 10  # decision slots + drain slots
    assert a[0] != c[0]
    # the episode reward is the sum of the per-task rewards
    assert np.isclose(a[0], a[2]["qoe_episode"])

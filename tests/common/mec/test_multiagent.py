"""The PettingZoo view, one agent per device: PettingZoo's API and seed tests, and agreement
with the single-agent env (same episode, rewards split per device)."""

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from common.mec.env import MECEnv
from common.mec.multiagent import MECParallelEnv, parallel_env

SMALL = dict(n_devices=6, n_edges=3, n_slots=15)


def test_parallel_api():
    env = MECParallelEnv("qeco", **SMALL)
    assert env.possible_agents == [f"device_{i}" for i in range(6)]
    parallel_api_test(env, num_cycles=60)


def test_parallel_seed():
    parallel_seed_test(lambda: parallel_env(scenario="qeco", **SMALL))


def test_agents_see_their_own_row_and_rewards_sum_to_the_joint_reward():
    multi, single = (
        MECParallelEnv("qeco", normalize=True, **SMALL),
        MECEnv("qeco", None, True, **SMALL),
    )
    obs_m, _ = multi.reset(seed=11)
    obs_s, _ = single.reset(seed=11)
    rng = np.random.default_rng(1)
    total = 0.0
    while multi.agents:
        for i, agent in enumerate(multi.possible_agents):
            np.testing.assert_array_equal(obs_m[agent]["features"], obs_s["features"][i])
            assert obs_m[agent]["task"] == obs_s["mask"][i]
            assert multi.observation_space(agent).contains(obs_m[agent])
        joint = rng.integers(0, 4, size=6)
        obs_m, rewards, terms, truncs, infos = multi.step(
            {a: joint[i] for i, a in enumerate(multi.agents)}
        )
        obs_s, r, done, _, info = single.step(joint)
        assert sum(rewards.values()) == pytest.approx(r)
        assert all(t == done for t in terms.values()) and not any(truncs.values())
        total += r
    assert multi.agents == [] and infos["device_0"]["metrics"]["qoe_episode"] == pytest.approx(
        total
    )
    assert multi.state().shape == multi.state_space.shape
    with pytest.raises(RuntimeError, match="call reset"):
        multi.step({})
    multi.reset(seed=0)
    with pytest.raises(ValueError, match="unknown agents"):
        multi.step({"phone_1": 0})

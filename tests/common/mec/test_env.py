"""The Gymnasium views: registration, API checks, determinism, and the batched ``VectorEnv``
against Gymnasium's own ``SyncVectorEnv`` of the single-episode env."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import common.mec  # noqa: F401  (registers the ids)
from common.config import ConfigError
from common.mec.env import MECEnv
from common.mec.features import feature_scale
from common.mec.registration import ENV_ID, PRESET_IDS
from common.mec.scenario import PRESETS, load_scenario
from common.mec.vector import MECVectorEnv

SMALL = dict(n_devices=6, n_edges=3, n_slots=15)


def make():
    return MECEnv(load_scenario("qeco", **SMALL))


def test_check_env():
    check_env(make(), skip_render_check=True)


def test_registered_ids_make_every_preset():
    env = gym.make(ENV_ID, scenario="qeco")
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.scenario.name == "qeco" and obs["features"].shape == (50, 6 + 5 * 5)
    check_env(env.unwrapped, skip_render_check=True)
    for preset in PRESETS:
        env = gym.make(PRESET_IDS[preset], history_slots=4)  # any scenario field is a keyword
        obs, _ = env.reset(seed=0)
        assert env.unwrapped.scenario.name == preset and obs["history"].shape[0] == 4
    with pytest.raises(ConfigError, match="unknown scenario preset 'nope'; valid presets"):
        gym.make(ENV_ID, scenario="nope")
    with pytest.raises(ConfigError, match="unknown field"):
        gym.make(ENV_ID, n_device=3)


def rollout(seed):
    env = make()
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    total, steps, done, per_device = 0.0, 0, False, 0.0
    while not done:
        obs, r, done, trunc, info = env.step(env.action_space.sample())
        assert not trunc
        total += r
        per_device = per_device + info["device_reward"]
        steps += 1
    return total, steps, info["metrics"], per_device


def test_determinism_rollout():
    a, b, c = rollout(3), rollout(3), rollout(4)
    assert a[0] == b[0] and a[2] == {**b[2], "slots_per_s": a[2]["slots_per_s"]}
    assert a[1] == 15 + 10  # decision slots + drain slots
    assert a[0] != c[0]
    # the episode reward is the sum of the per-task rewards, and of the per-device rewards
    assert np.isclose(a[0], a[2]["qoe_episode"])
    assert a[3].shape == (6,) and np.isclose(a[3].sum(), a[0])


def test_normalize_divides_by_the_networks_scales():
    raw, scaled = make(), MECEnv(load_scenario("qeco", **SMALL), normalize=True)
    o_raw, _ = raw.reset(seed=5)
    o_scaled, _ = scaled.reset(seed=5)
    feat, hist = feature_scale(raw.scenario)
    np.testing.assert_allclose(o_scaled["features"], o_raw["features"] / feat, rtol=1e-6)
    np.testing.assert_allclose(o_scaled["history"], o_raw["history"] / hist, rtol=1e-6)
    check_env(scaled, skip_render_check=True)


def test_policy_action_is_the_named_heuristic():
    env = gym.make(ENV_ID, scenario="qeco", **SMALL)
    totals = {}
    for name in ("all_local", "greedy"):
        env.reset(seed=1)
        done, total = False, 0.0
        while not done:
            _, r, done, _, _ = env.step(env.unwrapped.policy_action(name))
            total += r
        totals[name] = total
    assert totals["greedy"] > totals["all_local"]


def vector_pair(n, **kwargs):
    vec = gym.make_vec(
        ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **SMALL, **kwargs
    )
    sync = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync", **SMALL, **kwargs)
    return vec, sync


def test_make_vec_gives_the_batched_vector_env():
    vec = gym.make_vec(ENV_ID, num_envs=64, vectorization_mode="vector_entry_point")
    assert isinstance(vec.unwrapped, MECVectorEnv) and isinstance(vec, gym.vector.VectorEnv)
    assert vec.unwrapped.sim.E == 64 and vec.num_envs == 64
    obs, _ = vec.reset(seed=0)
    assert obs["features"].shape == (64, 50, 31) and vec.observation_space.contains(obs)
    assert vec.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP


@pytest.mark.parametrize("normalize", [False, True])
def test_vector_env_equals_sync_vector_env_step_for_step(normalize):
    """Two full episodes and the autoreset between them: the batched simulator gives exactly
    what Gymnasium's SyncVectorEnv of MECEnv gives (observations, rewards, terminations)."""
    vec, sync = vector_pair(3, normalize=normalize)
    o_vec, _ = vec.reset(seed=7)
    o_sync, _ = sync.reset(seed=7)
    rng = np.random.default_rng(0)
    episode_len, ends = 15 + 10, 0
    for step in range(2 * episode_len + 3):
        for key in o_vec:
            np.testing.assert_array_equal(o_vec[key], o_sync[key], err_msg=f"{key} step {step}")
        actions = rng.integers(0, 4, size=(3, 6))
        o_vec, r_vec, t_vec, tr_vec, i_vec = vec.step(actions)
        o_sync, r_sync, t_sync, tr_sync, _ = sync.step(actions)
        np.testing.assert_array_equal(r_vec, r_sync)
        np.testing.assert_array_equal(t_vec, t_sync)
        assert not tr_vec.any() and not tr_sync.any()
        ends += int(t_vec.all())
        if "device_reward" in i_vec:
            np.testing.assert_allclose(i_vec["device_reward"].sum(1), r_vec)
    assert ends == 2


def test_vector_env_same_step_and_disabled_autoreset():
    vec = MECVectorEnv(2, "qeco", autoreset_mode="SameStep", **SMALL)
    vec.reset(seed=1)
    for _ in range(24):
        _, _, term, _, info = vec.step(np.zeros((2, 6), dtype=int))
        assert not term.any() and "final_obs" not in info
    obs, _, term, _, info = vec.step(np.zeros((2, 6), dtype=int))
    assert term.all() and info["final_obs"].shape == (2,) and obs["history"].sum() == 0  # new
    off = MECVectorEnv(2, "qeco", autoreset_mode=AutoresetMode.DISABLED, **SMALL)
    off.reset(seed=1)
    for _ in range(25):
        off.step(np.zeros((2, 6), dtype=int))
    with pytest.raises(RuntimeError, match="call reset"):
        off.step(np.zeros((2, 6), dtype=int))
    with pytest.raises(ValueError, match="actions must have shape"):
        vec.step(np.zeros((3, 6), dtype=int))
    with pytest.raises(ValueError, match="need 2 seeds"):
        vec.reset(seed=[1, 2, 3])


def test_vector_env_baselines_and_seeds():
    vec = MECVectorEnv(4, "qeco", **SMALL)
    a, _ = vec.reset(seed=[5, 6, 7, 8])
    b, _ = MECVectorEnv(4, "qeco", **SMALL).reset(seed=5)
    np.testing.assert_array_equal(a["features"], b["features"])  # seed s ≡ [s, s+1, ...]
    greedy = vec.policy_actions("greedy")
    assert greedy.shape == (4, 6) and greedy.max() <= 3

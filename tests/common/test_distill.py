import math

import numpy as np
import pytest
import torch

from common.config import ConfigError
from common.distill import (
    ScheduleConfig,
    TargetConfig,
    class_mean_logits,
    cost_targets,
    hard_soft_loss,
    keco_loss,
    q_distill_loss,
    schedule_from_dict,
    schedule_value,
    soft_kl,
    soft_weight,
)
from common.training.distill_offline import distill_from_dict


def test_hard_soft_loss_matches_hand_computation():
    # z = [1, 0], y = 0, soft logits g = [0, 1], T = 2, δ = 0.5
    # CE = log(1 + e^-1) = 0.3132617
    # p_soft = softmax([0, .5]) = [0.3775407, 0.6224593]; p_student = softmax([.5, 0]) = reversed
    # KL = (0.6224593 - 0.3775407) * ln(0.6224593 / 0.3775407) = 0.2449187 * 0.5 = 0.1224593
    # L = 0.5 * 0.3132617 + 0.5 * 4 * 0.1224593 = 0.4015495
    z = torch.tensor([[1.0, 0.0]])
    loss = hard_soft_loss(
        z, torch.tensor([0]), torch.tensor([[0.0, 1.0]]), delta=0.5, temperature=2
    )
    assert loss.item() == pytest.approx(0.4015495, abs=1e-6)
    # δ = 1 is plain cross-entropy; δ = 0 is the pure soft term
    assert hard_soft_loss(z, torch.tensor([0]), z * 0, 1.0, 2.0).item() == pytest.approx(
        math.log(1 + math.exp(-1)), abs=1e-6
    )
    assert hard_soft_loss(z, torch.tensor([0]), z, 0.0, 3.0).item() == pytest.approx(0, abs=1e-7)


def test_keco_loss_weighs_targets_and_soft_labels_and_caps_the_soft_term():
    z = torch.tensor([[1.0, 0.0], [0.3, 0.1]])
    q = torch.tensor([[0.5, 0.5], [0.0, 1.0]])  # target distributions (or class indices)
    g = torch.tensor([[0.0, 1.0], [5.0, -5.0]])  # soft-label logits of the same rows
    ce = -(q * torch.log_softmax(z, 1)).sum(1).mean()
    kl = soft_kl(z, g, 2.0) / 4.0  # the KL at T = 2, without its T²
    # δ = 0.75, T = 2: soft weight (1 − δ)·T² = 1.0 > δ: capped at 1 × δ = 0.75
    assert soft_weight(0.75, 2.0, cap=1.0) == 0.75 and soft_weight(0.75, 2.0) == 1.0
    loss = keco_loss(z, q, z, g, 0.75, 2.0, cap=1.0)
    assert loss.item() == pytest.approx((0.75 * ce + 0.75 * kl).item(), abs=1e-6)
    uncapped = keco_loss(z, q, z, g, 0.75, 2.0)
    assert uncapped.item() == pytest.approx((0.75 * ce + 1.0 * kl).item(), abs=1e-6)
    # δ = 0.9, T = 1: (1 − δ)·T² = 0.1 is under the cap and used as it is
    assert keco_loss(z, q, z, g, 0.9, 1.0, cap=1.0).item() == pytest.approx(
        (0.9 * ce + 0.1 * soft_kl(z, g, 1.0)).item(), abs=1e-6
    )
    # no soft labels yet (round 1), or δ = 1: the cross-entropy alone
    assert keco_loss(z, q, None, None, 0.5, 2.0).item() == pytest.approx(ce.item(), abs=1e-6)
    assert keco_loss(z, q, z, g, 1.0, 2.0).item() == pytest.approx(ce.item(), abs=1e-6)
    # hard labels work as class indices; the soft term may be on other rows (proxy states)
    y = torch.tensor([0, 1])
    proxy_z = torch.tensor([[2.0, -1.0]])
    expected = 0.5 * torch.nn.functional.cross_entropy(z, y) + soft_weight(0.5, 1.0) * soft_kl(
        proxy_z, g[:1], 1.0
    )
    assert keco_loss(z, y, proxy_z, g[:1], 0.5, 1.0).item() == pytest.approx(expected.item())


def test_cost_targets_split_ties_equally_and_follow_the_costs():
    # task 0: local costs −30, ENs 1 and 3 tie at −35 (best), EN 2 at −34
    # task 1: one best action; task 2: every action drops (all equal)
    costs = np.array([[-30.0, -35.0, -34.0, -35.0], [-10.0, -9.0, 5.0, 5.0], [8.0] * 4])
    q = cost_targets(costs, TargetConfig(kind="soft", temperature=1.0))
    assert q.shape == (3, 4) and np.allclose(q.sum(1), 1.0)
    assert q[0, 1] == q[0, 3] and q[0, 1] > q[0, 2] > q[0, 0]
    # softmin: q_a ∝ exp(−(c_a − min c)/T)
    e = np.exp(-np.array([5.0, 0.0, 1.0, 0.0]))
    np.testing.assert_allclose(q[0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(q[2], 0.25)
    # a colder temperature sharpens towards the best actions
    cold = cost_targets(costs, TargetConfig(kind="soft", temperature=0.1))
    assert cold[0, 2] < q[0, 2] and cold[1, 0] > 0.99
    # hard: the oracle's own label (ties to the lowest index)
    hard = cost_targets(costs, TargetConfig(kind="hard"))
    np.testing.assert_array_equal(hard.argmax(1), [1, 0, 0])
    np.testing.assert_array_equal(hard.sum(1), 1.0)


def test_class_mean_logits_and_counts():
    logits = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 9.0]])
    table, counts = class_mean_logits(logits, torch.tensor([0, 0, 2]), n_classes=3)
    assert counts.tolist() == [2.0, 0.0, 1.0]
    assert table.tolist() == [[2.0, 3.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 9.0]]


def test_q_distill_loss_all_actions_and_taken_action():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 4.0], [1.0, 0.0]])
    assert q_distill_loss(s, t).item() == pytest.approx((4 + 1) / 4)
    assert q_distill_loss(s, t, torch.tensor([1, 1])).item() == pytest.approx(4 / 2)


@pytest.mark.parametrize("kind", ["linear", "cosine", "step"])
def test_schedule_endpoints(kind):
    cfg = ScheduleConfig(kind=kind, start=0.75, floor=0.25, length=10)
    assert schedule_value(cfg, 0) == pytest.approx(0.75)
    assert schedule_value(cfg, 10) == pytest.approx(0.25)
    assert schedule_value(cfg, 1000) == pytest.approx(0.25)
    values = [schedule_value(cfg, s) for s in range(12)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_schedule_midpoints():
    assert schedule_value(ScheduleConfig("linear", 0.75, 0.25, 10), 5) == pytest.approx(0.5)
    assert schedule_value(ScheduleConfig("cosine", 0.75, 0.25, 10), 5) == pytest.approx(0.5)
    assert schedule_value(ScheduleConfig("step", 0.75, 0.25, 10), 9) == pytest.approx(0.75)
    assert schedule_value(ScheduleConfig("constant", 0.6, 0.25, 10), 50) == pytest.approx(0.6)


def test_distill_config_validation_names_the_field():
    cfg = distill_from_dict({"loss": "kd", "steps": 20, "delta": {"kind": "cosine", "length": 5}})
    assert cfg.delta.kind == "cosine" and cfg.steps == 20
    with pytest.raises(ConfigError, match="distill.loss"):
        distill_from_dict({"loss": "l1"})
    with pytest.raises(ConfigError, match="schedule.floor"):
        schedule_from_dict({"floor": 1.5})
    with pytest.raises(ConfigError, match="unknown field"):
        distill_from_dict({"temprature": 2})

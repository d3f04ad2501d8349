import math

import pytest
import torch

from common.config import ConfigError, ScheduleConfig, distill_from_dict, schedule_from_dict
from common.distill import (
    adapt_temperature,
    class_mean_logits,
    hard_soft_loss,
    keco_loss,
    q_distill_loss,
    schedule_value,
)


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


def test_keco_loss_uses_the_row_of_the_hard_label():
    table = torch.tensor([[0.0, 1.0], [5.0, -5.0]])
    z = torch.tensor([[1.0, 0.0], [0.3, 0.1]])
    y = torch.tensor([0, 1])
    expected = hard_soft_loss(z, y, torch.stack([table[0], table[1]]), 0.25, 1.5)
    assert keco_loss(z, y, table, 0.25, 1.5).item() == pytest.approx(expected.item())


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


def test_adapt_temperature_only_on_plateau():
    assert adapt_temperature(4.0, None, 1.0) == 4.0
    assert adapt_temperature(4.0, 1.0, 0.5) == 4.0  # 50 % better: keep T
    assert adapt_temperature(4.0, 1.0, 0.999) == pytest.approx(3.6)
    assert adapt_temperature(1.05, 1.0, 1.0) == 1.0  # floor


def test_distill_config_validation_names_the_field():
    cfg = distill_from_dict({"loss": "kd", "steps": 20, "delta": {"kind": "cosine", "length": 5}})
    assert cfg.delta.kind == "cosine" and cfg.steps == 20
    with pytest.raises(ConfigError, match="distill.loss"):
        distill_from_dict({"loss": "l1"})
    with pytest.raises(ConfigError, match="schedule.floor"):
        schedule_from_dict({"floor": 1.5})
    with pytest.raises(ConfigError, match="unknown field"):
        distill_from_dict({"temprature": 2})

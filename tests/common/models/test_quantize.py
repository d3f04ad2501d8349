import torch

from common.config import ModelConfig
from common.models import (
    build_model,
    decision_agreement,
    measure_latency_us,
    model_size_bytes,
    quantize_int8,
)


def test_int8_student_is_smaller_and_mostly_agrees():
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="lstm_dueling", hidden=(80,)).scaled(1.0), 9, 10, 5)
    qnet = quantize_int8(net)
    gen = torch.Generator().manual_seed(1)
    f, h = torch.rand(2000, 9, generator=gen), torch.rand(2000, 10, 5, generator=gen)
    assert decision_agreement(net, net, f, h) == 1.0
    assert decision_agreement(net, qnet, f, h) >= 0.9
    assert model_size_bytes(qnet) < model_size_bytes(net)
    # the original float network is untouched
    assert any(isinstance(m, torch.nn.LSTM) for m in net.modules())


def test_latency_helper_returns_positive_microseconds_and_restores_threads():
    net = build_model(ModelConfig(arch="mlp", hidden=(8,)), 9, 10, 5)
    before = torch.get_num_threads()
    us = measure_latency_us(net, 9, 10, 5, reps=20, warmup=2)
    assert us > 0 and torch.get_num_threads() == before

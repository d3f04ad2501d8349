"""int8 students (dynamic and static), their TorchScript export, and the latency helper."""

import pytest
import torch

from common.models import (
    build_model,
    decision_agreement,
    export_torchscript,
    measure_latency_us,
    model_size_bytes,
    quantize_int8,
    quantize_int8_static,
)
from common.models.nets import ModelConfig


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


def _states(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 9, generator=gen), torch.rand(n, 10, 5, generator=gen)


def test_export_computes_what_the_module_computes_at_any_batch():
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="cnn").scaled(0.4), 9, 10, 5)
    exported = export_torchscript(net, *_states(1, 0))
    f, h = _states(300, 1)  # traced at batch 1, called at batch 300
    with torch.inference_mode():
        assert torch.allclose(exported(f, h), net(f, h), atol=1e-5)
    assert net.training and exported.nbytes() > model_size_bytes(net) // 2


def test_static_int8_student_quantises_convolutions_and_mostly_agrees():
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="cnn").scaled(0.4), 9, 10, 5)
    f, h = _states(1024, 2)
    qnet = quantize_int8_static(
        net, [(f[i : i + 256], h[i : i + 256]) for i in range(0, 1024, 256)]
    )
    kinds = {type(m).__module__ for m in qnet.modules()}
    assert any(k.startswith("torch.ao.nn.quantized") for k in kinds)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in qnet.modules())  # conv is int8 too
    assert model_size_bytes(qnet) < 0.4 * model_size_bytes(net)
    probe = _states(2000, 3)
    assert decision_agreement(net, qnet, *probe) >= 0.9
    assert decision_agreement(net, export_torchscript(qnet, *_states(1, 0)), *probe) >= 0.9
    assert any(isinstance(m, torch.nn.Conv2d) for m in net.modules())  # the original is kept


def test_static_int8_refuses_lstm_and_missing_calibration():
    lstm = build_model(ModelConfig(arch="lstm_dueling", hidden=(8,)), 9, 10, 5)
    with pytest.raises(ValueError, match="quantize_int8"):
        quantize_int8_static(lstm, [_states(8, 0)])
    mlp = build_model(ModelConfig(arch="mlp", hidden=(8,)), 9, 10, 5)
    with pytest.raises(ValueError, match="calibration batch"):
        quantize_int8_static(mlp, [])

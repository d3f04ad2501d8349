import numpy as np
import pytest
import torch

from common.config import ConfigError
from common.models import (
    CNNNet,
    LSTMDuelingNet,
    build_model,
    count_params,
    flatten_params,
    param_shapes,
    unflatten_params,
)
from common.models.nets import ModelConfig, model_from_dict

F_DIM, K, M = 9, 10, 5
ARCH_CFGS = {
    "cnn": ModelConfig(arch="cnn"),
    "lstm_dueling": ModelConfig(arch="lstm_dueling", hidden=(80,)),
    "mlp": ModelConfig(arch="mlp", hidden=(64, 64)),
}


def _inputs(batch=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, F_DIM, generator=gen), torch.rand(batch, K, M, generator=gen)


@pytest.mark.parametrize("arch", list(ARCH_CFGS))
@pytest.mark.parametrize("ratio", [0.1, 0.4, 1.0])
def test_output_shape(arch, ratio):
    torch.manual_seed(0)
    net = build_model(ARCH_CFGS[arch].scaled(ratio), F_DIM, K, M)
    out = net(*_inputs())
    assert out.shape == (7, M + 1) and torch.isfinite(out).all()


def test_cnn_teacher_layout_and_parameter_count():
    net = build_model(ARCH_CFGS["cnn"], F_DIM, K, M)
    assert isinstance(net, CNNNet)
    assert (net.conv1.out_channels, net.conv1.kernel_size, net.conv1.stride) == (32, (6, 6), (1, 1))
    assert (net.conv2.out_channels, net.conv2.kernel_size) == (64, (6, 6))
    assert (net.pool.kernel_size, net.pool.stride) == (2, 2)
    # conv1 32·36+32, conv2 64·32·36+64, map FC 64·4·4·64 + 64, FC (64 + 9)·128 + 128,
    # dueling A 128·6+6, V 128+1
    expected = (32 * 36 + 32) + (64 * 32 * 36 + 64) + 1024 * 64 + 64 + 73 * 128 + 128 + 774 + 129
    assert count_params(net) == expected == 150951


def test_lstm_dueling_parameter_count():
    net = build_model(ARCH_CFGS["lstm_dueling"], F_DIM, K, M)
    assert isinstance(net, LSTMDuelingNet)
    # LSTM 4·(24·5 + 24·24 + 2·24), FC (24+9)·80+80, A 80·6+6, V 80+1
    assert count_params(net) == 4 * (120 + 576 + 48) + 33 * 80 + 80 + 486 + 81 == 6263


@pytest.mark.parametrize("arch", ["cnn", "lstm_dueling"])
def test_student_at_ratio_0_4_has_75_percent_fewer_parameters(arch):
    teacher = count_params(build_model(ARCH_CFGS[arch], F_DIM, K, M))
    student = count_params(build_model(ARCH_CFGS[arch].scaled(0.4), F_DIM, K, M))
    reduction = 1 - student / teacher
    assert reduction >= 0.75
    assert {"cnn": 25717, "lstm_dueling": 1551}[arch] == student


def test_dueling_head_subtracts_mean_advantage():
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="mlp", hidden=(8,)), F_DIM, K, M)
    f, h = _inputs(3)
    x = net.head.body(torch.cat([f, h.flatten(1)], 1))
    adv = net.head.advantage(x)
    q = net(f, h)
    np.testing.assert_allclose(q.mean(1).detach(), net.head.value(x).squeeze(1).detach(), atol=1e-6)
    np.testing.assert_allclose(
        (q - q.mean(1, keepdim=True)).detach(),
        (adv - adv.mean(1, keepdim=True)).detach(),
        atol=1e-6,
    )


@pytest.mark.parametrize("arch", list(ARCH_CFGS))
def test_flatten_unflatten_round_trip(arch):
    torch.manual_seed(1)
    src = build_model(ARCH_CFGS[arch].scaled(0.4), F_DIM, K, M)
    torch.manual_seed(2)
    dst = build_model(ARCH_CFGS[arch].scaled(0.4), F_DIM, K, M)
    vec = flatten_params(src)
    assert vec.shape == (count_params(src),) and vec.dtype == np.float64
    assert sum(int(np.prod(s)) for _, s in param_shapes(src)) == vec.size
    f, h = _inputs()
    assert not torch.allclose(src(f, h), dst(f, h))
    unflatten_params(dst, vec)
    np.testing.assert_array_equal(flatten_params(dst), vec)
    torch.testing.assert_close(src(f, h), dst(f, h), rtol=0, atol=0)


def test_unflatten_rejects_wrong_length():
    net = build_model(ARCH_CFGS["mlp"], F_DIM, K, M)
    with pytest.raises(ValueError, match="same architecture"):
        unflatten_params(net, np.zeros(count_params(net) - 1))


def test_model_config_validation():
    cfg = model_from_dict({"arch": "lstm_dueling", "hidden": [80], "ratio": 1})
    assert cfg.hidden == (80,) and cfg.ratio == 1.0
    with pytest.raises(ConfigError, match="model.arch"):
        model_from_dict({"arch": "transformer"})
    with pytest.raises(ConfigError, match="model.map_size"):
        model_from_dict({"arch": "cnn", "map_size": 12})
    with pytest.raises(ConfigError, match="model.ratio"):
        ModelConfig().scaled(0.0)

"""int8 dynamic quantisation of a student (DDLRO's model compression idea)."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_int8(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose Linear and LSTM layers hold int8 weights (activations are
    quantised on the fly per batch); conv layers stay float32, as dynamic quantisation has no
    conv kernels."""
    from torch.ao.quantization import quantize_dynamic

    float_net = copy.deepcopy(net).eval()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency.
        warnings.simplefilter("ignore")
        return quantize_dynamic(float_net, {nn.Linear, nn.LSTM}, dtype=torch.qint8)


def decision_agreement(
    net_a: nn.Module, net_b: nn.Module, features: torch.Tensor, history: torch.Tensor
) -> float:
    """Fraction of states on which two networks take the same argmax action."""
    with torch.inference_mode():
        a = net_a(features, history).argmax(dim=1)
        b = net_b(features, history).argmax(dim=1)
    return float((a == b).float().mean())

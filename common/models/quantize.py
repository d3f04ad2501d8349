"""int8 students (DDLRO's model compression idea) and their deployable TorchScript form.

Two quantisations:

- :func:`quantize_int8`: dynamic. Linear and LSTM weights int8, each layer's input quantised on
  the fly per batch; convolutions stay float. No calibration data; used by the distillation
  tables' ``student_int8``.
- :func:`quantize_int8_static`: post-training static (FX graph mode). Weights *and* activations
  int8, convolutions included, with scales calibrated on representative states; the input is
  quantised once and the scores dequantised once.

:func:`export_torchscript` traces and freezes a network the way it would ship to a device
(no Python per layer); compare an int8 network with its float original in the same runtime.
"""

from __future__ import annotations

import copy
import io
import operator
import warnings
from collections.abc import Iterable

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


def quantize_int8_static(
    net: nn.Module, calibration: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> nn.Module:
    """A copy of ``net`` with int8 weights and activations (convolutions and linear layers),
    its activation scales observed on the ``(features, history)`` batches of ``calibration``
    (normalised states, as the policy sees them), for the active quantised engine
    (``torch.backends.quantized.engine``). LSTM networks are not supported (FX cannot trace
    them statically): use :func:`quantize_int8`."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if any(isinstance(m, nn.LSTM) for m in net.modules()):
        raise ValueError("static int8 does not cover LSTM layers; use quantize_int8 (dynamic)")
    batches = list(calibration)
    if not batches:
        raise ValueError("static int8 needs at least one calibration batch of states")
    float_net = copy.deepcopy(net).eval()
    # The dueling head's Q = V + A - mean(A) stays float: a quantised add would broadcast V's
    # [B, 1] into a [B, M+1] output by resizing it, which PyTorch deprecates.
    mapping = (
        get_default_qconfig_mapping(torch.backends.quantized.engine)
        .set_object_type(operator.add, None)
        .set_object_type(operator.sub, None)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        prepared = prepare_fx(float_net, mapping, batches[0])
        with torch.inference_mode():
            for features, history in batches:
                prepared(features, history)
        return convert_fx(prepared)


class Exported(nn.Module):
    """A frozen TorchScript network behind the usual ``forward(features, history)``."""

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.module(features, history)

    def nbytes(self) -> int:
        """Bytes of the saved TorchScript archive (code and weights)."""
        buf = io.BytesIO()
        torch.jit.save(self.module, buf)
        return buf.getbuffer().nbytes


def export_torchscript(net: nn.Module, features: torch.Tensor, history: torch.Tensor) -> Exported:
    """``net`` traced on one example ``(features, history)`` and frozen (weights folded in as
    constants, eval mode): what a device would load with ``torch.jit.load``. The traced graph
    serves any batch size."""
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about quantised ops' constants
            frozen = torch.jit.freeze(torch.jit.trace(net, (features, history)).eval())
    finally:
        net.train(was_training)
    return Exported(frozen)


def decision_agreement(
    net_a: nn.Module, net_b: nn.Module, features: torch.Tensor, history: torch.Tensor
) -> float:
    """Fraction of states on which two networks take the same argmax action."""
    with torch.inference_mode():
        a = net_a(features, history).argmax(dim=1)
        b = net_b(features, history).argmax(dim=1)
    return float((a == b).float().mean())

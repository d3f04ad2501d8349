"""Teacher and student offloading networks, parameter (un)flattening, latency, int8 students."""

from common.models.latency import latency_samples_us, measure_latency_us, model_size_bytes
from common.models.nets import (
    ARCHS,
    CNNNet,
    LSTMDuelingNet,
    MLPNet,
    QHead,
    build_for_scenario,
    build_model,
    scale_width,
)
from common.models.params import count_params, flatten_params, param_shapes, unflatten_params
from common.models.policy import NetPolicy, ScaledInputs
from common.models.quantize import (
    Exported,
    decision_agreement,
    export_torchscript,
    quantize_int8,
    quantize_int8_static,
)

__all__ = [
    "ARCHS",
    "CNNNet",
    "LSTMDuelingNet",
    "MLPNet",
    "NetPolicy",
    "ScaledInputs",
    "QHead",
    "build_for_scenario",
    "build_model",
    "count_params",
    "decision_agreement",
    "flatten_params",
    "latency_samples_us",
    "measure_latency_us",
    "model_size_bytes",
    "param_shapes",
    "quantize_int8",
    "quantize_int8_static",
    "export_torchscript",
    "Exported",
    "scale_width",
    "unflatten_params",
]

"""A federated client's work in plain Python: device profiles, the compute-time model, the local
buffer and the KECO local round (no Flower code: the ClientApp wraps this)."""

from common.fed.local import (
    LocalState,
    RoundResult,
    build_student,
    client_student,
    distill_global,
    evaluate_student,
    initial_weights,
    knowledge_shape,
    load_teacher,
    save_teacher,
    train_on_schedule,
    train_round,
)
from common.fed.profiles import (
    ClientProfile,
    client_profile,
    compute_seconds,
    federation_profile,
    slow_clients,
)

__all__ = [
    "ClientProfile",
    "LocalState",
    "RoundResult",
    "build_student",
    "client_profile",
    "client_student",
    "compute_seconds",
    "distill_global",
    "evaluate_student",
    "federation_profile",
    "initial_weights",
    "knowledge_shape",
    "load_teacher",
    "save_teacher",
    "slow_clients",
    "train_on_schedule",
    "train_round",
]

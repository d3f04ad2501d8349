"""A federated client's work in plain Python: device profiles, the compute-time model, the local
buffer and the KECO local round (no Flower code: the ClientApp wraps this)."""

from common.fed.local import (
    LocalState,
    RoundResult,
    build_student,
    canonical,
    evaluate_student,
    initial_weights,
    load_teacher,
    save_teacher,
    train_round,
)
from common.fed.profiles import ClientProfile, client_profile, compute_seconds

__all__ = [
    "ClientProfile",
    "LocalState",
    "RoundResult",
    "build_student",
    "canonical",
    "client_profile",
    "compute_seconds",
    "evaluate_student",
    "initial_weights",
    "load_teacher",
    "save_teacher",
    "train_round",
]

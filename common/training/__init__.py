"""Centralised training of offloading networks: imitation (DIL), D3QN, DDPG, offline
distillation."""

from common.training.common import (
    NormalizedData,
    evaluate_episodes,
    fit,
    normalize,
    permute_edges_batch,
    seed_everything,
)
from common.training.d3qn import D3QNResult, train_d3qn
from common.training.ddpg import DDPGResult, train_ddpg
from common.training.distill_offline import distill_student, teacher_outputs
from common.training.imitation import ImitationResult, train_imitation

__all__ = [
    "D3QNResult",
    "DDPGResult",
    "ImitationResult",
    "NormalizedData",
    "distill_student",
    "evaluate_episodes",
    "fit",
    "normalize",
    "permute_edges_batch",
    "seed_everything",
    "teacher_outputs",
    "train_d3qn",
    "train_ddpg",
    "train_imitation",
]

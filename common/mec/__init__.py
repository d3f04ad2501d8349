"""The MEC simulator: vectorised queues, energy and QoE, KECO extensions, policies, datasets.

Importing it registers the Gymnasium ids ``keco/MEC-v0`` and ``keco/MEC-<preset>-v0``
(:mod:`common.mec.registration`).
"""

from common.mec.evaluate import TaskDataset, collect_dataset, evaluate_policy, rollout
from common.mec.features import feature_scale, n_features
from common.mec.registration import ENV_ID, register_envs
from common.mec.sim import DeviceProfile, MECBatch, Observation, summarize

register_envs()

__all__ = [
    "ENV_ID",
    "DeviceProfile",
    "MECBatch",
    "Observation",
    "TaskDataset",
    "collect_dataset",
    "evaluate_policy",
    "feature_scale",
    "n_features",
    "rollout",
    "summarize",
]

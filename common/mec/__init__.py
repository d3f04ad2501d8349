"""The MEC simulator: vectorised queues, energy and QoE, KECO extensions, policies, datasets."""

from common.mec.evaluate import TaskDataset, collect_dataset, evaluate_policy, rollout
from common.mec.features import feature_scale, n_features
from common.mec.sim import DeviceProfile, MECBatch, Observation, summarize

__all__ = [
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

"""FedMeta2Ag's double aggregation (seed 003, Algorithm 1) on Flower's FedAvg message format.

Clients meta-train the student locally (first-order MAML) and report the MEC-L edge server
they belong to (``edge-group``). Each round the strategy averages the clients of every edge
server weighted by their examples (the MEC-L aggregation), then takes the plain mean of the
edge models (the MEC-C aggregation, ``θ = 1/M Σ θ_m``), so an edge server with few devices
weighs as much as a crowded one. Replies with non-finite or misshapen weights are dropped
with a log line; the round goes on with the others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.common import log

from common.protocol import EDGE_GROUP_KEY
from server.fedavg import DeadlineFedAvg, split_late


class FedMeta2Ag(DeadlineFedAvg):
    """FedAvg's sampling, messages and deadline with edge-level, then cloud-level,
    aggregation."""

    def __init__(self, *args, expected_length: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.expected_length = expected_length

    def _usable(self, msg: Message) -> bool:
        """A reply carrying exactly the student's finite weights, a count and an edge group."""
        node = msg.metadata.src_node_id
        arrays = list(msg.content.array_records.values())
        metrics = list(msg.content.metric_records.values())
        reason = None
        if len(arrays) != 1 or len(metrics) != 1:
            reason = "expected one ArrayRecord and one MetricRecord"
        else:
            values = [a.numpy() for a in arrays[0].values()]
            n = metrics[0].get(self.weighted_by_key)
            if sum(v.size for v in values) != self.expected_length:
                reason = f"weights of length {sum(v.size for v in values)}, expected "
                reason += str(self.expected_length)
            elif not all(np.isfinite(v).all() for v in values):
                reason = "non-finite weights"
            elif not isinstance(n, (int, float)) or not n > 0:
                reason = f"{self.weighted_by_key} must be positive, got {n!r}"
            elif EDGE_GROUP_KEY not in metrics[0]:
                reason = f"no {EDGE_GROUP_KEY} metric"
        if reason:
            log(WARNING, "fedmeta2ag: dropped the reply of node %s: %s", node, reason)
        return reason is None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies, dropped = split_late(replies)
        for msg in replies:
            if msg.has_error():
                log(WARNING, "fedmeta2ag: node %s failed: %s", msg.metadata.src_node_id,
                    msg.error.reason)  # fmt: skip
        valid = [m for m in replies if not m.has_error() and self._usable(m)]
        if not valid:
            return None, MetricRecord(self.deadline_metrics(valid, dropped))
        groups: dict[int, list[Message]] = defaultdict(list)
        for msg in valid:
            metrics = next(iter(msg.content.metric_records.values()))
            groups[int(metrics[EDGE_GROUP_KEY])].append(msg)
        edge_models = [edge_average(members, self.weighted_by_key) for members in groups.values()]
        cloud = {k: np.mean([m[k] for m in edge_models], axis=0) for k in edge_models[0]}
        arrays = ArrayRecord({k: Array(v.astype(np.float32)) for k, v in cloud.items()})
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        metrics["edge_servers"] = len(groups)
        metrics.update(self.deadline_metrics(valid, dropped))
        return arrays, metrics


def edge_average(members: list[Message], weight_key: str) -> dict[str, np.ndarray]:
    """The MEC-L aggregation: the example-weighted mean of one edge server's client models."""
    weights = np.array(
        [float(next(iter(m.content.metric_records.values()))[weight_key]) for m in members]
    )
    weights = weights / weights.sum()
    out: dict[str, np.ndarray] = {}
    for msg, w in zip(members, weights, strict=True):
        for key, value in next(iter(msg.content.array_records.values())).items():
            out[key] = out.get(key, 0.0) + w * value.numpy().astype(np.float64)
    return out

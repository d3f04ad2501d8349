"""FedMeta2Ag's double aggregation: edge-level weighted means, then the cloud's plain mean;
bad replies are dropped and the round goes on."""

import time

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)

from common.protocol import EDGE_GROUP_KEY
from server.fedmeta2ag import FedMeta2Ag


def _reply(node: int, weights: np.ndarray | None, n: float, group: int | None) -> Message:
    meta = Metadata(
        run_id=1, message_id=f"r{node}", src_node_id=node, dst_node_id=0,
        reply_to_message_id=f"i{node}", group_id="1", created_at=time.time(), ttl=60.0,
        message_type=MessageType.TRAIN,
    )  # fmt: skip
    if weights is None:
        return Message(metadata=meta, error=Error(code=0, reason="client crashed"))
    metrics = {"num-examples": n, "train_loss": float(node)}
    if group is not None:
        metrics[EDGE_GROUP_KEY] = group
    content = RecordDict(
        {"arrays": ArrayRecord({"student": Array(weights.astype(np.float32))}),
         "metrics": MetricRecord(metrics)}
    )  # fmt: skip
    return Message(metadata=meta, content=content)


def _strategy() -> FedMeta2Ag:
    return FedMeta2Ag(weighted_by_key="num-examples", expected_length=3)


def test_edge_then_cloud_average():
    w = {i: np.array([i, 2.0 * i, -i], dtype=np.float64) for i in range(1, 5)}
    replies = [
        _reply(1, w[1], 10, 0), _reply(2, w[2], 30, 0),  # edge 0: weighted by examples
        _reply(3, w[3], 5, 1),  # edge 1: one client with few examples
    ]  # fmt: skip
    arrays, metrics = _strategy().aggregate_train(1, replies)
    edge0 = (10 * w[1] + 30 * w[2]) / 40
    expected = (edge0 + w[3]) / 2  # the cloud's plain mean of the edge models (Algorithm 1)
    np.testing.assert_allclose(arrays["student"].numpy(), expected, rtol=1e-6)
    flat_fedavg = (10 * w[1] + 30 * w[2] + 5 * w[3]) / 45
    assert not np.allclose(expected, flat_fedavg)  # not FedAvg in disguise
    assert metrics["edge_servers"] == 2
    assert metrics["train_loss"] == pytest.approx((10 * 1 + 30 * 2 + 5 * 3) / 45)


def test_bad_replies_are_dropped_and_the_round_goes_on():
    good = np.array([1.0, 2.0, 3.0])
    replies = [
        _reply(1, good, 10, 0),
        _reply(2, np.array([np.nan, 0.0, 0.0]), 10, 0),  # NaN
        _reply(3, np.ones(4), 10, 1),  # foreign shape
        _reply(4, good * 5, 0, 1),  # no examples
        _reply(5, good * 7, 10, None),  # no edge group
        _reply(6, None, 0, None),  # an error reply
    ]
    arrays, _ = _strategy().aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["student"].numpy(), good)


def test_no_usable_reply_keeps_the_model():
    arrays, metrics = _strategy().aggregate_train(1, [_reply(1, None, 0, None)])
    assert arrays is None and metrics["set_x"] == 0 and metrics["set_late"] == 0

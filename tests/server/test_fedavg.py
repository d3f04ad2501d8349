"""FedAvg under the shared round deadline: drop late updates or wait for them, and the round's
simulated wall-clock time."""

import math
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict

from server.fedavg import DeadlineFedAvg, reply_nbytes, round_seconds
from server.run import train_metrics


def _reply(node: int, weights: np.ndarray | None, n: float, compute_s: float, late: bool):
    meta = Metadata(
        run_id=1, message_id=f"r{node}", src_node_id=node, dst_node_id=0,
        reply_to_message_id=f"i{node}", group_id="1", created_at=time.time(), ttl=60.0,
        message_type=MessageType.TRAIN,
    )  # fmt: skip
    metrics = {"num-examples": n, "compute_s": compute_s, "late": float(late), "episodes": 1.0,
               "train_steps": 10.0}  # fmt: skip
    records = {"metrics": MetricRecord(metrics)}
    if weights is not None:  # a dropped late client sends no update
        records["arrays"] = ArrayRecord({"student": Array(weights.astype(np.float32))})
    return Message(metadata=meta, content=RecordDict(records))


def _strategy(deadline: float) -> DeadlineFedAvg:
    return DeadlineFedAvg(
        weighted_by_key="num-examples", train_metrics_aggr_fn=train_metrics, deadline_s=deadline,
        uplink_mbps=10.0,
    )  # fmt: skip


def _upload_s(reply: Message) -> float:
    return 8 * reply_nbytes(reply) / 10e6


def test_drop_averages_only_the_on_time_clients():
    w = {i: np.full(1000, float(i)) for i in range(1, 4)}
    replies = [
        _reply(1, w[1], 100, 1.0, False),
        _reply(2, w[2], 300, 1.5, False),
        _reply(3, None, 500, 7.0, True),  # late: dropped, its 500 examples weigh nothing
    ]
    arrays, metrics = _strategy(deadline=2.0).aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["student"].numpy(), (100 * 1 + 300 * 2) / 400)
    assert (metrics["set_x"], metrics["set_late"]) == (2, 1)
    # a late update was waited for until the deadline: the round lasts at least that long
    assert metrics["sim_seconds"] == pytest.approx(max(2.0, 1.5 + _upload_s(replies[1])))
    # the budget counters are summed over the clients that sent an update
    assert metrics["episodes"] == 2 and metrics["train_steps"] == 20
    # everybody late: no update, the global model stays, the round still ends at the deadline
    arrays, metrics = _strategy(2.0).aggregate_train(2, [_reply(3, None, 500, 7.0, True)])
    assert arrays is None and metrics["set_x"] == 0 and metrics["sim_seconds"] == 2.0


def test_wait_includes_late_clients_and_lasts_as_long_as_the_slowest():
    w = {i: np.full(1000, float(i)) for i in range(1, 4)}
    replies = [
        _reply(1, w[1], 100, 1.0, False),
        _reply(2, w[2], 300, 1.5, False),
        _reply(3, w[3], 500, 7.0, True),  # late, but a waiting FedAvg trained and waited
    ]
    arrays, metrics = _strategy(deadline=2.0).aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["student"].numpy(), (100 + 600 + 1500) / 900, rtol=1e-6)
    assert (metrics["set_x"], metrics["set_late"]) == (3, 0)
    assert metrics["sim_seconds"] == pytest.approx(7.0 + _upload_s(replies[2]))
    assert reply_nbytes(replies[2]) >= 4000  # the float32 weights cross the uplink


def test_round_seconds():
    assert round_seconds([(1.0, 2_500_000), (3.0, 0)], 0, math.inf, 10.0) == 3.0
    assert round_seconds([(1.0, 2_500_000)], 0, math.inf, 10.0) == pytest.approx(3.0)
    assert round_seconds([], 2, 4.0, 10.0) == 4.0
    assert round_seconds([], 0, math.inf, 10.0) == 0.0

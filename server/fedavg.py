"""FedAvg under the round deadline that every strategy shares (``strategy.deadline_s``).

A client whose simulated compute time is over the deadline is *late*. Under ``late: wait`` it
trains anyway and the round lasts as long as the slowest sampled client (``fedavg_wait``);
under ``late: drop`` it replies without an update (metric ``late`` = 1), the strategy averages
the on-time clients only and the round ends at the deadline (``fedavg_drop``). Either way the
round's simulated wall-clock time is recorded (``sim_seconds``): the slowest used client's
compute time plus the time to upload its reply, and at least the deadline when a late update
was dropped (the server cannot know a client is late before then).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import INFO

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp.strategy import FedAvg

from common.protocol import COMPUTE_KEY, LATE_KEY


def reply_nbytes(msg: Message) -> int:
    """Bytes of the arrays a reply carries (the update that crosses the uplink)."""
    return sum(len(a.data) for r in msg.content.array_records.values() for a in r.values())


def _metric(msg: Message, key: str) -> float:
    for record in msg.content.metric_records.values():
        if key in record:
            return float(record[key])
    return 0.0


def split_late(replies: Iterable[Message]) -> tuple[list[Message], list[Message]]:
    """Replies that carry an update, and the late ones that were dropped (no update)."""
    used, dropped = [], []
    for msg in replies:
        late = not msg.has_error() and _metric(msg, LATE_KEY) > 0
        (dropped if late and not msg.content.array_records else used).append(msg)
    return used, dropped


def round_seconds(
    used: Iterable[tuple[float, int]], dropped: int, deadline_s: float, uplink_mbps: float
) -> float:
    """Simulated round time from the used replies' (compute seconds, reply bytes): the slowest
    compute plus upload, at least the deadline when ``dropped`` late updates were waited for."""
    slowest = max((c + 8.0 * b / (uplink_mbps * 1e6) for c, b in used), default=0.0)
    if dropped and math.isfinite(deadline_s):
        slowest = max(slowest, deadline_s)
    return slowest


class DeadlineFedAvg(FedAvg):
    """Flower's FedAvg that drops late clients' replies and records the simulated round time."""

    def __init__(self, *args, deadline_s: float = math.inf, uplink_mbps: float = 20.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline_s = deadline_s
        self.uplink_mbps = uplink_mbps

    def deadline_metrics(self, used: list[Message], dropped: list[Message]) -> dict[str, float]:
        """``set_x`` (updates used), ``set_late`` (late updates dropped), ``sim_seconds``,
        ``values_up`` (the values the updates carry)."""
        ok = [m for m in used if not m.has_error()]
        timed = [(_metric(m, COMPUTE_KEY), reply_nbytes(m)) for m in ok]
        values = sum(a.numpy().size for m in ok for r in m.content.array_records.values()
                     for a in r.values())  # fmt: skip
        return {
            "set_x": len(ok),
            "set_late": len(dropped),
            "sim_seconds": round_seconds(timed, len(dropped), self.deadline_s, self.uplink_mbps),
            "values_up": values,
        }

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        used, dropped = split_late(replies)
        if dropped:
            log(INFO, "round %d: dropped %d late update(s)", server_round, len(dropped))
        arrays, metrics = super().aggregate_train(server_round, used) if used else (None, None)
        metrics = metrics if metrics is not None else MetricRecord()
        metrics.update(self.deadline_metrics(used, dropped))
        return arrays, metrics

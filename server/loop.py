"""The federated round loop with a checkpoint after every round (Flower's ``Strategy.start``
does the same rounds but cannot resume).

Works with any Message-API strategy (KECO, FedAvg): per round it configures and aggregates
training and evaluation, records one row of metrics, and atomically writes the global arrays
and the history to ``<run_dir>/checkpoint``. Client sampling draws from Python's ``random``,
which is reseeded from (seed, round) so that a resumed run samples as the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log  # Flower's logger: shows in `flwr log` and simulations
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

CHECKPOINT_DIR = "checkpoint"
STOCK_POLLING_ENV = "KECO_STOCK_FLOWER_POLLING"
"""Set to ``1`` to keep Flower's own message polling in simulations (for benchmarks)."""


def content_nbytes(content: RecordDict) -> int:
    """Bytes of arrays and byte strings carried by a message (what crosses the network)."""
    total = 0
    for record in content.array_records.values():
        total += sum(len(a.data) for a in record.values())
    for record in content.config_records.values():
        for value in record.values():
            if isinstance(value, bytes):
                total += len(value)
            elif isinstance(value, list):
                total += sum(len(v) for v in value if isinstance(v, bytes))
    return total


def _ok(replies: list[Message]) -> list[Message]:
    return [m for m in replies if not m.has_error()]


def _digest(message: Message) -> str:
    """A digest of a reply's content, to order replies independently of arrival order."""
    h = hashlib.sha256()
    if message.has_error():
        h.update(str(message.error.reason).encode())
        return h.hexdigest()
    content = message.content
    for name in sorted(content.array_records):
        for key, arr in sorted(content.array_records[name].items()):
            h.update(name.encode() + key.encode() + arr.data)
    for name in sorted(content.config_records):
        for key, value in sorted(content.config_records[name].items()):
            h.update(name.encode() + key.encode())
            items = value if isinstance(value, list) else [value]
            for item in items:
                h.update(item if isinstance(item, bytes) else repr(item).encode())
    for name in sorted(content.metric_records):
        h.update(name.encode() + repr(sorted(content.metric_records[name].items())).encode())
    return h.hexdigest()


def ordered(replies: list[Message]) -> list[Message]:
    """Replies in a deterministic order: floating-point sums then do not depend on which
    client answered first, so a resumed run aggregates exactly as an uninterrupted one."""
    return sorted(replies, key=_digest)


def save_checkpoint(run_dir: Path, server_round: int, arrays: ArrayRecord, history: list[dict]):
    """Write ``arrays`` and ``history`` after ``server_round`` (atomic replace)."""
    ckpt = run_dir / CHECKPOINT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    # the arrays of each round get their own file; state.json, replaced last, names the one
    # that belongs to it, so a crash at any point leaves a consistent checkpoint
    name = f"arrays-r{server_round}.npz"
    tmp = ckpt / f".{name}.tmp.npz"
    np.savez(tmp, **{k: v.numpy() for k, v in arrays.items()})
    tmp.replace(ckpt / name)
    state = ckpt / ".state.tmp.json"
    state.write_text(json.dumps({"round": server_round, "arrays": name, "history": history}))
    state.replace(ckpt / "state.json")
    for old in ckpt.glob("arrays-r*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> tuple[int, ArrayRecord, list[dict]] | None:
    """The last finished round, its global arrays and the history; ``None`` if no checkpoint."""
    ckpt = run_dir / CHECKPOINT_DIR
    if not (ckpt / "state.json").exists():
        return None
    state = json.loads((ckpt / "state.json").read_text())
    with np.load(ckpt / state["arrays"]) as z:
        arrays = ArrayRecord({k: Array(z[k]) for k in z.files})
    return int(state["round"]), arrays, list(state["history"])


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    *,
    num_rounds: int,
    seed: int,
    run_dir: Path,
    resume: bool = False,
    timeout_s: float = 3600.0,
    train_config: Callable[[int], ConfigRecord] | None = None,
    summarize: Callable[[int, dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[ArrayRecord, list[dict[str, Any]]]:
    """Run rounds ``1..num_rounds`` (or continue after the checkpoint); returns the final arrays
    and one dict per round. ``summarize(round, train_metrics, eval_metrics)`` maps the
    strategy's aggregated metrics to the recorded row; ``on_round(row)`` gets a copy of each
    row once it is checkpointed (experiment tracking: only the aggregated metrics, never the
    global arrays)."""
    history: list[dict[str, Any]] = []
    first = 1
    if resume and (ckpt := load_checkpoint(run_dir)) is not None:
        done, arrays, history = ckpt
        first = done + 1
        log(INFO, "resuming after round %d from %s", done, run_dir / CHECKPOINT_DIR)
    for server_round in range(first, num_rounds + 1):
        t0 = time.perf_counter()
        cfg = train_config(server_round) if train_config else ConfigRecord()
        random.seed(seed * 1_000_003 + 2 * server_round)  # str hashes vary between processes
        messages = list(strategy.configure_train(server_round, arrays, cfg, grid))
        bytes_down = sum(content_nbytes(m.content) for m in messages)
        replies = ordered(list(grid.send_and_receive(messages, timeout=timeout_s)))
        bytes_up = sum(content_nbytes(m.content) for m in _ok(replies))
        new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            arrays = new_arrays
        random.seed(seed * 1_000_003 + 2 * server_round + 1)
        eval_messages = list(strategy.configure_evaluate(server_round, arrays, cfg, grid))
        bytes_down += sum(content_nbytes(m.content) for m in eval_messages)
        eval_replies = ordered(list(grid.send_and_receive(eval_messages, timeout=timeout_s)))
        eval_metrics = strategy.aggregate_evaluate(server_round, eval_replies)
        tm = dict(train_metrics or {})
        em = dict(eval_metrics or {})
        row = summarize(server_round, tm, em) if summarize else {**tm, **em}
        row.update(
            round=server_round,
            bytes_up=int(bytes_up),
            bytes_down=int(bytes_down),
            clients_train=len(messages),
            clients_replied=len(_ok(replies)),
            seconds=round(time.perf_counter() - t0, 3),
        )
        history.append(row)
        save_checkpoint(run_dir, server_round, arrays, history)
        log(
            INFO,
            "[round %d/%d] loss=%s qoe=%s drop=%s x/u/v=%s/%s/%s up=%.0fKB down=%.0fKB %.1fs",
            server_round, num_rounds, _fmt(row.get("train_loss")), _fmt(row.get("eval_qoe")),
            _fmt(row.get("eval_drop_ratio")), row.get("set_x", "-"), row.get("set_u", "-"),
            row.get("set_v", "-"), bytes_up / 1e3, bytes_down / 1e3, row["seconds"],
        )  # fmt: skip
        if on_round is not None:
            on_round(dict(row))
    return arrays, history


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


# ---- Flower's simulation engine: message delivery to the virtual clients --------------------
def _pending_polling(stock: Callable[..., None]) -> Callable[..., None]:
    """Flower's ``add_messages_to_queue`` without its O(nodes × messages) sweep.

    The stock loop asks the in-memory LinkState for one message per registered node every
    0.1 s, and each ask scans every stored message: with 1,000 nodes and 100 messages in flight
    one sweep costs ~0.5 s of CPU under the state's lock, so the poller alone keeps a core busy
    while the clients train. This loop first collects (in one pass) the nodes that have an
    undelivered message and asks only for those, in the stock order; the rest is unchanged.
    A LinkState of another kind keeps the stock loop.
    """

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop: threading.Event) -> None:
        store, lock = getattr(state, "message_ins_store", None), getattr(state, "lock", None)
        if not isinstance(store, dict) or lock is None:
            stock(state, queue, nodes_mapping, f_stop)
            return
        while not f_stop.is_set():
            with lock:
                pending = {
                    m.metadata.dst_node_id for m in store.values() if m.metadata.delivered_at == ""
                }
            if pending:
                for node_id in nodes_mapping.keys():
                    if node_id in pending:
                        for msg in state.get_message_ins(node_id=node_id, limit=1):
                            queue.put(msg)
            f_stop.wait(0.1)

    add_messages_to_queue.stock = stock  # type: ignore[attr-defined]
    return add_messages_to_queue


@contextlib.contextmanager
def fast_simulation_polling() -> Iterator[bool]:
    """Within the block, Flower simulations deliver messages without the O(nodes × messages)
    sweep (:func:`_pending_polling`); yields whether the fast loop is installed (not when
    ``KECO_STOCK_FLOWER_POLLING=1``). Wrap ``flwr.simulation.run_simulation`` in it."""
    from flwr.server.superlink.fleet.vce import vce_api

    current = vce_api.add_messages_to_queue
    if os.environ.get(STOCK_POLLING_ENV) == "1" or hasattr(current, "stock"):
        yield hasattr(current, "stock")  # stock requested, or already installed (nested)
        return
    vce_api.add_messages_to_queue = _pending_polling(current)
    try:
        yield True
    finally:
        vce_api.add_messages_to_queue = current


SIMULATION_NODE_ID_SEED = 20_241_124
"""Seed of the node-id sequence of simulated SuperNodes (:func:`stable_simulation_node_ids`)."""


@contextlib.contextmanager
def stable_simulation_node_ids() -> Iterator[None]:
    """Within the block, Flower simulations give their virtual SuperNodes the same node ids in
    every run (a fixed pseudo-random sequence in registration order, i.e. by partition id).

    Flower draws node ids from ``os.urandom``; the strategies sample node ids, so with partial
    participation the same seed would otherwise train a different set of clients in every run.
    With stable ids, sampling seeded by (seed, round) picks the same partitions every time.
    Only node registration is affected (run and message ids stay random). Wrap
    ``flwr.simulation.run_simulation`` in it.
    """
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate import in_memory_linkstate

    register, draw = vce_api._register_nodes, in_memory_linkstate.generate_rand_int_from_bytes
    if hasattr(register, "stock"):  # already installed (nested)
        yield
        return

    def register_nodes(num_nodes: int, state_factory: Any) -> dict[int, int]:
        rng, registering = random.Random(SIMULATION_NODE_ID_SEED), threading.get_ident()

        def next_id(num_bytes: int, exclude: set[int] | None = None) -> int:
            if threading.get_ident() != registering:  # another thread's id: Flower's own draw
                return draw(num_bytes, exclude)
            while (node_id := rng.getrandbits(8 * num_bytes)) in (exclude or ()):
                pass
            return node_id

        in_memory_linkstate.generate_rand_int_from_bytes = next_id
        try:
            return register(num_nodes, state_factory)
        finally:
            in_memory_linkstate.generate_rand_int_from_bytes = draw

    register_nodes.stock = register  # type: ignore[attr-defined]
    vce_api._register_nodes = register_nodes
    try:
        yield
    finally:
        vce_api._register_nodes = register


@contextlib.contextmanager
def keep_outer_ray() -> Iterator[bool]:
    """Within the block, Flower's simulation leaves a Ray connection it did not open alone.

    Flower's Ray backend calls ``ray.shutdown()`` when the simulation ends, also when Ray was
    initialised before (the simulation then runs on that cluster): inside a Ray task, e.g. a job
    of Hydra's Ray launcher, that cuts the task off from Ray and the task fails after its work
    is done. Yields whether Ray was already initialised (and is therefore kept).
    """
    import ray

    if not ray.is_initialized():
        yield False
        return
    shutdown = ray.shutdown
    ray.shutdown = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield True
    finally:
        ray.shutdown = shutdown  # type: ignore[assignment]

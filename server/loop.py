"""The federated round loop with a checkpoint after every round (Flower's ``Strategy.start``
does the same rounds but cannot resume).

Works with any Message-API strategy (KECO, FedAvg): per round it configures and aggregates
training and evaluation, records one row of metrics, and atomically writes the global arrays
and the history to ``<run_dir>/checkpoint``. Client sampling draws from Python's ``random``,
which is reseeded from (seed, round) so that a resumed run samples as the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log  # Flower's logger: shows in `flwr log` and simulations
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

CHECKPOINT_DIR = "checkpoint"


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


def save_checkpoint(
    run_dir: Path, server_round: int, arrays: ArrayRecord, history: list[dict]
) -> None:
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

"""CKKS cost: a whole KECO round with CKKS vs the same round in plaintext, plus micro-benchmarks.

``python -m experiments.bench suite=he [clients=[10,100]] [rounds=3] [repeats=1]
[he=ckks] [overrides=[...]] [parts=[round,micro]] [micro_clients=[10,100,1000]]
[sizes=[1500,6500]] [classes=33] [late=0.2] [seed=0]``

**round**: for each number of clients, the same federation (Flower simulation on Ray, every
client trained every round, identical clients and seeds; ``experiments.benchmarks._fed``) runs
once with ``he=<he>`` and once with ``he=off``, side by side (the order alternates between
repeats). A round is the server's whole round: sampling, Ray transport, client decryption,
local work, encryption, aggregation and federated evaluation; its wall time comes from the
server's history and its CPU time from the process tree. Round 1 (actor start-up) is reported
apart; the ratio uses the steady rounds.

**micro**: for every (clients, model size) it builds real uploads (80 % on time, the rest split
between stale and fresh late clients; weights n_i of 100 to 4,000 samples), runs
``Keco.aggregate_train`` on real Flower reply messages, and has a client decrypt the result;
the same pipeline then runs on the plaintext backend. Timings are wall-clock milliseconds; the
error is the largest absolute difference of W and G (with Δ) from the numpy weighted means.
Bytes per value are an on-time upload's ciphertext bytes over the values it carries (model and
soft labels), and the global sum's over the same values, next to plaintext float32 (4 bytes).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
from flwr.app import Message, MessageType, Metadata

from common.config import ConfigError
from common.crypto import PlainBackend, make_backend
from common.crypto.keygen import generate_keys
from common.crypto.params import HE_MAX_COEFF_BITS, load_he
from common.protocol import ROLE_FRESH, ROLE_ON_TIME, ROLE_STALE, build_upload, read_global
from experiments.benchmarks._fed import (
    FedBench,
    emit_table,
    fmt,
    markdown_table,
    round_ratios,
)
from server.strategy import Keco, to_recorddict

UPLOAD_BYTES_PER_VALUE = 10.0
"""Target: at most 10 bytes per uploaded value (model parameters plus soft labels)."""
DOWNLOAD_BYTES_PER_VALUE = 20.0
"""Target: at most 20 bytes per downloaded value (the global sums)."""
PLAIN_BYTES_PER_VALUE = 4
"""Plaintext float32, FedAvg's wire format: the reference the figures are given next to."""
AGGREGATION_RATIO_TARGET = 3.0
"""Target: aggregating 100 uploads takes at most 3 × deserialising them."""
ERROR_TARGET = 1e-6
ROUND_RATIO_TARGET = 1.1
"""Target: a CKKS round takes at most 1.1 × the plaintext round at 100 clients."""


def _reply(node_id: int, records: dict) -> Message:
    metadata = Metadata(
        run_id=0,
        message_id=f"bench-{node_id}",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="bench",
        created_at=time.time(),
        ttl=3600.0,
        message_type=MessageType.TRAIN,
    )
    return Message(metadata=metadata, content=to_recorddict(records))


def _clients(rng: np.random.Generator, n: int, late: float) -> list[str]:
    n_late = int(round(n * late))
    roles = [ROLE_ON_TIME] * (n - n_late) + [ROLE_STALE] * (n_late // 2)
    return roles + [ROLE_FRESH] * (n - len(roles))


def _case(client, server, n_clients: int, size: int, classes: int, late: float, seed: int):
    rng = np.random.default_rng(seed)
    roles = _clients(rng, n_clients, late)
    weights = rng.integers(100, 4000, size=n_clients).astype(float)
    models = rng.normal(size=(n_clients, size))
    tables = rng.normal(scale=3.0, size=(n_clients, classes, classes))

    start = time.perf_counter()
    # round 2: on-time and fresh late uploads carry its logits, stale ones round 1's
    uploads = [
        build_upload(client, role, n, g, w if role == ROLE_ON_TIME else None,
                     1 if role == ROLE_STALE else 2)
        for role, n, w, g in zip(roles, weights, models, tables, strict=True)
    ]  # fmt: skip
    encrypt_s = time.perf_counter() - start
    on_time = [u for u in uploads if u.role == ROLE_ON_TIME]
    replies = [_reply(i + 1, u.to_records()) for i, u in enumerate(uploads)]

    # Reference cost: TenSEAL/numpy deserialisation of every chunk, nothing else.
    start = time.perf_counter()
    for u in uploads:
        for chunk in u.payload.chunks:
            server._deserialize_chunk(chunk)
    deserialize_s = time.perf_counter() - start

    strategy = Keco(server, size, classes, max_examples=4000)
    start = time.perf_counter()
    _, metrics = strategy.aggregate_train(2, replies)
    aggregate_s = time.perf_counter() - start

    sums = strategy.global_sums
    start = time.perf_counter()
    model, soft = read_global(client, sums, size, classes)
    decrypt_s = time.perf_counter() - start

    def mean(role: str, values: np.ndarray) -> np.ndarray | float:
        mask = np.array([r == role for r in roles])
        if not mask.any():
            return 0.0
        return np.tensordot(weights[mask], values[mask], axes=1) / weights[mask].sum()

    want_soft = mean(ROLE_ON_TIME, tables) + mean(ROLE_STALE, tables) - mean(ROLE_FRESH, tables)
    error = max(
        float(np.max(np.abs(model - mean(ROLE_ON_TIME, models)))),
        float(np.max(np.abs(soft - want_soft))),
    )
    assert metrics["rejected"] == 0
    values_up = size + classes * classes  # what an on-time upload carries
    upload = int(np.mean([u.payload.nbytes for u in on_time]))
    return {
        "clients": n_clients,
        "params": size,
        "set_x": int(metrics["set_x"]),
        "set_u": int(metrics["set_u"]),
        "set_v": int(metrics["set_v"]),
        "encrypt_ms_per_client": 1e3 * encrypt_s / n_clients,
        "upload_bytes_per_client": upload,
        "upload_bytes_per_value": upload / values_up,
        "download_bytes_per_value": sums.x.payload.nbytes / values_up,
        "late_upload_bytes_per_client": int(
            np.mean([u.payload.nbytes for u in uploads if u.role != ROLE_ON_TIME] or [0])
        ),
        "download_bytes_per_client": int(sums.nbytes),
        "deserialize_ms": 1e3 * deserialize_s,
        "aggregate_ms": 1e3 * aggregate_s,
        "aggregate_over_deserialize": aggregate_s / deserialize_s,
        "decrypt_ms": 1e3 * decrypt_s,
        "max_abs_error": error,
    }


def micro(args: dict[str, Any]) -> dict[str, Any]:
    """The encryption micro-benchmarks (module docstring, **micro**)."""
    clients = [int(c) for c in args.get("micro_clients", [10, 100, 1000])]
    sizes = [int(s) for s in args.get("sizes", [1500, 6500])]
    classes = int(args.get("classes", 33))
    late = float(args.get("late", 0.2))
    seed = int(args.get("seed", 0))
    cfg = load_he(str(args.get("he", "ckks")))
    plain = PlainBackend(load_he("off"))
    with tempfile.TemporaryDirectory() as key_dir:
        secret_path, public_path = generate_keys(cfg, key_dir)
        client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
        rows = []
        for size in sizes:
            for n in clients:
                row = _case(client, server, n, size, classes, late, seed)
                ref = _case(plain, plain, n, size, classes, late, seed)
                row.update({f"plain_{k}": ref[k] for k in _PLAIN_KEYS})
                rows.append(row)
    largest = max(sizes)
    at_largest = [r for r in rows if r["params"] == largest]
    checks = {
        "upload_le_10_bytes_per_value_at_largest_model": all(
            r["upload_bytes_per_value"] <= UPLOAD_BYTES_PER_VALUE for r in at_largest
        ),
        "download_le_20_bytes_per_value_at_largest_model": all(
            r["download_bytes_per_value"] <= DOWNLOAD_BYTES_PER_VALUE for r in at_largest
        ),
        "security_ge_128_bits": sum(cfg.coeff_mod_bit_sizes)
        <= HE_MAX_COEFF_BITS[cfg.poly_modulus_degree],
        "aggregate_100_le_3x_deserialize": all(
            r["aggregate_over_deserialize"] <= AGGREGATION_RATIO_TARGET
            for r in rows
            if r["clients"] == 100
        ),
        "max_abs_error_le_1e-6": all(r["max_abs_error"] <= ERROR_TARGET for r in rows),
    }
    return {
        "he": {
            "preset": cfg.name,
            "poly_modulus_degree": cfg.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(cfg.coeff_mod_bit_sizes),
            "global_scale_bits": cfg.global_scale_bits,
            "fraction_bits": cfg.fraction_bits,
            "security": f"128-bit: {sum(cfg.coeff_mod_bit_sizes)} of the "
            f"{HE_MAX_COEFF_BITS[cfg.poly_modulus_degree]} modulus bits allowed at "
            f"N = {cfg.poly_modulus_degree} (HomomorphicEncryption.org)",
        },
        "plain_bytes_per_value": PLAIN_BYTES_PER_VALUE,
        "classes": classes,
        "late_fraction": late,
        "rows": rows,
        "targets_met": checks,
        "table": _table(rows),
    }


_PLAIN_KEYS = (
    "encrypt_ms_per_client",
    "upload_bytes_per_client",
    "aggregate_ms",
    "decrypt_ms",
    "max_abs_error",
)


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| clients | params | encrypt ms/client | upload KB/client | upload B/value | "
        "download B/value | deserialise ms | aggregate ms | agg/deser | decrypt ms | "
        "max abs error | plain encode ms/client | plain upload KB | plain aggregate ms | "
        "plain decode ms |"
    )
    lines = [head, "|" + " ---: |" * 15]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['params']} | {r['encrypt_ms_per_client']:.2f} | "
            f"{r['upload_bytes_per_client'] / 1e3:.0f} | {r['upload_bytes_per_value']:.2f} | "
            f"{r['download_bytes_per_value']:.2f} | {r['deserialize_ms']:.0f} | "
            f"{r['aggregate_ms']:.0f} | {r['aggregate_over_deserialize']:.2f} | "
            f"{r['decrypt_ms']:.1f} | {r['max_abs_error']:.1e} | "
            f"{r['plain_encrypt_ms_per_client']:.3f} | "
            f"{r['plain_upload_bytes_per_client'] / 1e3:.0f} | {r['plain_aggregate_ms']:.1f} | "
            f"{r['plain_decrypt_ms']:.2f} |"
        )
    return "\n".join(lines)


# ---- the whole round ------------------------------------------------------------------------
def whole_round(args: dict[str, Any]) -> dict[str, Any]:
    """CKKS vs plaintext federations, side by side (module docstring, **round**)."""
    clients = [int(c) for c in args.get("clients", [10, 100])]
    rounds = int(args.get("rounds", 3))
    repeats = int(args.get("repeats", 1))
    he = str(args.get("he", "ckks"))
    modes = {he: [f"he={he}"], "off": ["he=off"]}
    with FedBench(args) as bench:
        config = bench.describe()
        summaries = bench.side_by_side("he", modes, clients, rounds, repeats)
    rows = [{"he": m, **summary[m]} for summary in summaries.values() for m in modes]
    ratios = [
        {"clients": n, **round_ratios(summary[he], summary["off"])}
        for n, summary in summaries.items()
    ]
    return {"config": {**config, "rounds": rounds}, "rows": rows, "ratios": ratios}


def _round_table(result: dict[str, Any]) -> str:
    by = {(r["clients"], r["he"]): r for r in result["rows"]}
    he = result["rows"][0]["he"]
    lines = []
    for q in result["ratios"]:
        n = q["clients"]
        enc, plain = by[n, he], by[n, "off"]
        lines.append(
            [n, fmt(enc["round_s"]), fmt(plain["round_s"]), fmt(q["round_ratio"]),
             fmt(enc["round_cpu_s"]), fmt(plain["round_cpu_s"]), fmt(q["round_cpu_ratio"]),
             fmt(enc["first_round_s"], 1), fmt(plain["first_round_s"], 1),
             fmt(enc["bytes_up_per_round"] / 1e6, 1), fmt(plain["bytes_up_per_round"] / 1e6, 1),
             fmt(enc["peak_rss_bytes"] / 1e9), "/".join(f"{v:.1f}" for v in enc["load"])]
        )  # fmt: skip
    head = [
        "clients", f"{he} round s", "plain round s", "ratio", f"{he} round CPU s",
        "plain round CPU s", "CPU ratio", f"{he} round 1 s", "plain round 1 s",
        f"{he} up MB/round", "plain up MB/round", f"{he} peak RSS GB", "load",
    ]  # fmt: skip
    return markdown_table(head, lines)


def run(args: dict[str, Any]) -> dict[str, Any]:
    """The suite: ``parts=[round, micro]`` (both by default)."""
    parts = args.get("parts", ["round", "micro"])
    parts = [parts] if isinstance(parts, str) else list(parts)
    unknown = set(parts) - {"round", "micro"}
    if unknown:
        raise ConfigError(f"bench he: unknown parts {sorted(unknown)}; valid: round, micro")
    out: dict[str, Any] = {}
    targets: dict[str, bool | None] = {}
    tables = []
    if "round" in parts:
        out["round"] = whole_round(args)
        out["round"]["table"] = _round_table(out["round"])
        largest = max(out["round"]["ratios"], key=lambda q: q["clients"])
        n = largest["clients"]
        for key, name in (("round_ratio", "wall"), ("round_cpu_ratio", "cpu")):
            value = largest[key]
            targets[f"ckks_round_{name}_le_1.1x_plain_at_{n}_clients"] = (
                None if value is None else value <= ROUND_RATIO_TARGET
            )
        tables.append(("he: a whole round, CKKS vs plaintext", out["round"]["table"]))
    if "micro" in parts:
        out["micro"] = micro(args)
        targets.update(out["micro"]["targets_met"])
        tables.append(("he: encryption micro-benchmarks", out["micro"]["table"]))
    out["targets_met"] = targets
    out["table"] = "\n\n".join(t for _, t in tables)
    for title, table in tables:
        emit_table(title, table)
    return out

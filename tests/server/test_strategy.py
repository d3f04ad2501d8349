import math
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, Metadata

from common.crypto import CryptoError, EncryptedVector, make_backend
from common.crypto.params import load_he
from common.protocol import (
    CONFIG,
    GLOBAL_PREFIX,
    METRICS,
    PAYLOAD,
    UPLOAD,
    GlobalSums,
    RoundSettings,
    build_upload,
    initial_arrays,
    initial_weight,
    read_global,
)
from server.strategy import Keco, RoundFailedError, config_records, to_recorddict


def _metadata(node_id: int) -> Metadata:
    """Metadata of a reply from ``node_id``, as the Grid hands it to the strategy."""
    return Metadata(
        run_id=1,
        message_id=f"reply-{node_id}",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id=f"instruction-{node_id}",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=MessageType.TRAIN,
    )


def _reply(node_id: int, records: dict, metrics: dict | None = None) -> Message:
    """A real Flower reply message from ``node_id`` with ``common.protocol`` records."""
    content = to_recorddict(records, {METRICS: metrics} if metrics else None)
    return Message(metadata=_metadata(node_id), content=content)


def _error_reply(node_id: int) -> Message:
    return Message(metadata=_metadata(node_id), error=Error(code=0, reason="client crashed"))


def _expected(clients, correction=True):
    """Numpy reference of KECO's aggregation: weighted means and Δ."""

    def mean(role, what):
        sel = [c for c in clients if c["role"] == role]
        if not sel:
            return 0.0
        return sum(c["n"] * c[what] for c in sel) / sum(c["n"] for c in sel)

    model = mean("x", "W")
    soft = mean("x", "G")
    roles = {c["role"] for c in clients}
    if correction and {"u", "v"} <= roles:  # Δ needs both stale and fresh late logits
        soft = soft + mean("u", "G") - mean("v", "G")
    return model, soft


def _clients(rng, n_clients, model_length, num_classes, roles, rows=None):
    return [
        {
            "node": 100 + i,
            "role": roles[i],
            "n": int(rng.integers(100, 4000)),  # a buffer of one episode or more
            "W": rng.normal(size=model_length),
            "G": rng.normal(scale=3.0, size=(rows or num_classes, num_classes)),
            "compute_s": float(rng.uniform(0.5, 3.0)),
        }
        for i in range(n_clients)
    ]


def _upload_replies(backend, clients, server_round=2):
    """Replies to ``server_round``: this round's logits, or the previous round's (role u)."""
    replies = []
    for c in clients:
        model = c["W"] if c["role"] == "x" else None
        logits_round = server_round - 1 if c["role"] == "u" else server_round
        upload = build_upload(backend, c["role"], c["n"], c["G"], model, logits_round)
        metrics = {"train_loss": 1.0 + c["n"], "compute_s": c["compute_s"]}
        replies.append(_reply(c["node"], upload.to_records(), metrics))
    return replies


def test_100_clients_encrypted_equal_numpy_weighted_means(keys):
    """The default CKKS parameters, 100 clients in sets x, u and v, Δ on: error <= 1e-6."""
    cfg, secret_path, public_path = keys("ckks")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    model_length, num_classes = 6500, 33  # the benchmark's larger student, KECO's 32 ENs
    rng = np.random.default_rng(42)
    roles = ["x"] * 60 + ["u"] * 20 + ["v"] * 20
    clients = _clients(rng, 100, model_length, num_classes, roles)
    strategy = Keco(server, model_length, num_classes)

    arrays, metrics = strategy.aggregate_train(2, _upload_replies(client, clients))

    sums = strategy.sums_from_arrays(arrays)  # the state travels through start() as arrays
    model, soft = read_global(client, sums, model_length, num_classes)
    want_model, want_soft = _expected(clients)
    assert np.max(np.abs(model - want_model)) <= 1e-6
    assert np.max(np.abs(soft - want_soft)) <= 1e-6
    assert (metrics["set_x"], metrics["set_u"], metrics["set_v"]) == (60, 20, 20)
    assert metrics["rejected"] == 0
    assert metrics["total_x"] == sum(c["n"] for c in clients if c["role"] == "x")
    # one seeded ciphertext per upload (6,500 + 33 x 33 values fit in 8,192), ~8 B per value
    chunk = len(build_upload(client, "v", 1, np.eye(33)).payload.chunks[0])
    assert metrics["bytes_up"] == pytest.approx(100 * chunk, rel=0.01)
    assert chunk <= 8.1 * 8192
    weights = np.array([c["n"] for c in clients])
    assert metrics["train_loss"] == pytest.approx(np.sum(weights * (1.0 + weights)) / weights.sum())


def test_delta_over_proxy_rows_matches_numpy_and_the_round_records_its_time(keys):
    """Per-sample knowledge: every client's logits on the 64 shared proxy states; Δ over the
    same rows; the round lasts as long as the slowest used client plus its upload."""
    cfg, secret_path, public_path = keys("ckks")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    model_length, num_classes, rows = 900, 6, 64
    rng = np.random.default_rng(3)
    clients = _clients(rng, 7, model_length, num_classes, ["x", "x", "x", "u", "u", "v", "v"], rows)
    strategy = Keco(server, model_length, num_classes, rows, uplink_mbps=8.0)
    replies = _upload_replies(client, clients, 3)
    arrays, metrics = strategy.aggregate_train(3, replies)
    model, soft = read_global(client, strategy.sums_from_arrays(arrays), model_length,
                              num_classes, rows)  # fmt: skip
    want_model, want_soft = _expected(clients)
    assert soft.shape == (rows, num_classes)
    assert np.max(np.abs(model - want_model)) <= 1e-6
    assert np.max(np.abs(soft - want_soft)) <= 1e-6
    assert metrics["delta_formed"] == 1.0
    upload_s = [
        8 * EncryptedVector.from_dict(config_records(r.content)[PAYLOAD]).nbytes / 8e6
        for r in replies
    ]
    assert metrics["sim_seconds"] == pytest.approx(
        max(c["compute_s"] + t for c, t in zip(clients, upload_s, strict=True))
    )
    # one late set alone forms no Δ, and the flag says so
    no_v = [r for r, c in zip(replies, clients, strict=True) if c["role"] != "v"]
    assert strategy.aggregate_train(3, no_v)[1]["delta_formed"] == 0.0
    # round 1 carries no knowledge yet (the clients then train on their targets alone)
    arrays0 = initial_arrays(np.zeros(model_length), np.zeros((rows, num_classes)))
    initial = ArrayRecord({k: Array(v) for k, v in arrays0.items()})
    first = strategy.instruction(1, strategy.sums_from_arrays(initial), ConfigRecord())
    later = strategy.instruction(2, strategy.sums_from_arrays(initial), ConfigRecord())
    assert not RoundSettings.from_config(config_records(first)[CONFIG]).knowledge
    assert RoundSettings.from_config(config_records(later)[CONFIG]).knowledge


def test_bad_replies_are_dropped_with_reasons_and_the_round_goes_on(keys, caplog):
    cfg, secret_path, public_path = keys("ckks4096")
    _, stranger_secret, _ = keys("ckks4096", tag="stranger")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    stranger = make_backend(cfg, stranger_secret)
    model_length, num_classes = 300, 4
    rng = np.random.default_rng(7)
    good = _clients(rng, 6, model_length, num_classes, ["x", "x", "x", "x", "u", "v"])
    replies = _upload_replies(client, good, 3)

    def upload(backend=client, n=50.0, length=model_length):
        model = rng.normal(size=length)
        return build_upload(backend, "x", n, np.eye(num_classes), model, 3).to_records()

    other_key = upload(backend=stranger)
    corrupted = upload()
    chunk = bytearray(corrupted[PAYLOAD]["chunks"][0])
    chunk[1000:1064] = bytes(64)
    corrupted[PAYLOAD]["chunks"] = [bytes(chunk)]
    wrong_length = upload(length=model_length + 1)
    zero_n, negative_n = upload(), upload()
    zero_n[UPLOAD]["num-examples"] = 0
    negative_n[UPLOAD]["num-examples"] = -3
    bad = {
        201: (other_key, "encrypted under another key"),
        202: (corrupted, "chunk 0 is corrupted"),
        203: (wrong_length, "length 317 does not match the expected 316"),
        204: (zero_n, "n_i=0 must be a positive"),
        205: (negative_n, "n_i=-3 must be a positive"),
    }
    replies += [_reply(node, records) for node, (records, _) in bad.items()]
    replies.append(_error_reply(206))
    strategy = Keco(server, model_length, num_classes, min_replies=6)

    with caplog.at_level("WARNING"):
        arrays, metrics = strategy.aggregate_train(3, replies)

    for node, (_, reason) in bad.items():
        assert any(
            f"rejected the reply from node {node}: " in r.message and reason in r.message
            for r in caplog.records
        ), reason
    assert any(
        "node 206 replied with an error: client crashed" in r.message for r in caplog.records
    )
    assert (metrics["rejected"], metrics["failed"]) == (5, 1)
    assert (metrics["set_x"], metrics["set_u"], metrics["set_v"]) == (4, 1, 1)
    model, soft = read_global(client, strategy.sums_from_arrays(arrays), model_length, num_classes)
    want_model, want_soft = _expected(good)
    assert np.max(np.abs(model - want_model)) <= 1e-6
    assert np.max(np.abs(soft - want_soft)) <= 1e-6


def test_plaintext_mode_rejects_out_of_range_integers_and_keeps_the_round():
    backend = make_backend(load_he("off"))
    model_length, num_classes = 9000, 3
    rng = np.random.default_rng(3)
    good = _clients(rng, 3, model_length, num_classes, ["x", "x", "v"])
    replies = _upload_replies(backend, good, 1)
    poisoned = build_upload(backend, "x", 10, np.eye(3), np.ones(model_length)).to_records()
    payload = EncryptedVector.from_dict(poisoned[PAYLOAD])
    values = np.frombuffer(payload.chunks[1], dtype="<i8").copy()
    values[3] = 2**62  # would overflow the int64 sum
    chunks = [payload.chunks[0], values.tobytes()]
    poisoned[PAYLOAD] = EncryptedVector.build(
        "plain", payload.params_hash, "none", payload.length, chunks, "int64", "none"
    ).to_dict()
    replies.append(_reply(300, poisoned))
    strategy = Keco(backend, model_length, num_classes)

    arrays, metrics = strategy.aggregate_train(1, replies)

    assert metrics["rejected"] == 1
    model, soft = read_global(backend, strategy.sums_from_arrays(arrays), model_length, num_classes)
    want_model, want_soft = _expected(good)
    np.testing.assert_allclose(model, want_model, atol=1e-6)
    np.testing.assert_allclose(soft, want_soft, atol=1e-6)


def test_round_fails_with_a_clear_error_when_too_few_replies_remain(keys):
    cfg, secret_path, public_path = keys("ckks4096")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    rng = np.random.default_rng(5)
    replies = _upload_replies(client, _clients(rng, 2, 100, 3, ["x", "x"]), 4)
    broken = build_upload(client, "u", 4, np.eye(3)).to_records()
    broken[UPLOAD]["num-examples"] = -1
    replies.append(_reply(999, broken))
    with pytest.raises(RoundFailedError, match=r"2 usable replies.*min_replies=3.*node 999"):
        Keco(server, 100, 3, min_replies=3).aggregate_train(4, replies)

    late_only = _upload_replies(client, _clients(rng, 2, 100, 3, ["u", "v"]), 4)
    with pytest.raises(RoundFailedError, match=r"\(0 on time\)"):
        Keco(server, 100, 3).aggregate_train(4, late_only)


def test_correction_off_ignores_late_clients(keys):
    cfg, secret_path, public_path = keys("ckks4096")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    rng = np.random.default_rng(9)
    clients = _clients(rng, 5, 200, 3, ["x", "x", "x", "u", "v"])
    strategy = Keco(server, 200, 3, correction=False)

    arrays, metrics = strategy.aggregate_train(2, _upload_replies(client, clients))

    assert (metrics["set_u"], metrics["set_v"], metrics["ignored_late"]) == (0, 0, 2)
    sums = strategy.sums_from_arrays(arrays)
    assert sums.u is None and sums.v is None
    content = strategy.instruction(3, sums, ConfigRecord())
    assert {GLOBAL_PREFIX + "x"} == {k for k in content.config_records if k.startswith("keco.g")}
    _, soft = read_global(client, sums, 200, 3)
    assert np.max(np.abs(soft - _expected(clients, correction=False)[1])) <= 1e-6


def test_round_one_instruction_carries_encrypted_initial_model_and_schedules(keys):
    cfg, secret_path, public_path = keys("ckks4096")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    rng = np.random.default_rng(11)
    model0, soft0 = rng.normal(size=2500), rng.normal(size=(6, 6))
    strategy = Keco(
        server, 2500, 6, delta=lambda r: 0.9 / r, temperature=3.0, deadline_s=lambda r: 2.0 * r,
        max_examples=4000,
    )  # fmt: skip
    initial = ArrayRecord({k: Array(v) for k, v in initial_arrays(model0, soft0).items()})

    sums = strategy.sums_from_arrays(initial)
    content = strategy.instruction(2, sums, ConfigRecord({"local-epochs": 3}))

    configs = config_records(content)
    settings = RoundSettings.from_config(configs[CONFIG])
    assert settings == RoundSettings(
        server_round=2, model_length=2500, num_classes=6, knowledge_rows=6, knowledge=True,
        delta=0.45, temperature=3.0, deadline_s=4.0, correction=True,
    )  # fmt: skip
    assert configs[CONFIG]["local-epochs"] == 3
    received = GlobalSums.from_records(configs)
    # the round-1 state is s·[W0, G0] with total s: the largest power of two <= max n_i
    s = received.x.total
    assert s == initial_weight(4000) == 2048.0
    assert received.x.payload.scheme == "ckks" and received.x.payload.encryption == "public"
    model, soft = read_global(client, received, 2500, 6)
    # the fixed-point grid is s times finer than 2^-12: within 2^-24 of W0
    assert np.max(np.abs(model - model0)) <= 2.0**-24 and np.max(np.abs(soft - soft0)) <= 2.0**-24

    with pytest.raises(ValueError, match="expects 2500 and \\(6, 6\\)"):
        Keco(server, 2500, 6).sums_from_arrays(
            ArrayRecord({k: Array(v) for k, v in initial_arrays(model0[:10], soft0).items()})
        )
    with pytest.raises(ValueError, match="initial_arrays"):
        strategy.sums_from_arrays(ArrayRecord({"weights": Array(model0)}))


def test_server_refuses_the_secret_context(keys):
    cfg, secret_path, _ = keys("ckks4096")
    with pytest.raises(CryptoError, match="public.ctx"):
        Keco(make_backend(cfg, secret_path), 10, 3)


def test_evaluation_metrics_weighted_by_tasks(caplog):
    strategy = Keco(make_backend(load_he("off")), 10, 3)
    replies = [
        _reply(1, {}, {"tasks": 10, "qoe": 1.0, "drop_ratio": 0.5}),
        _reply(2, {}, {"tasks": 30, "qoe": 3.0, "drop_ratio": 0.1}),
        _reply(3, {}, {"tasks": 0, "qoe": 100.0, "drop_ratio": 0.0}),
        _reply(4, {}, {"tasks": 5, "qoe": math.nan, "drop_ratio": 0.0}),
    ]
    with caplog.at_level("WARNING"):
        metrics = strategy.aggregate_evaluate(1, replies)
    assert metrics["qoe"] == pytest.approx(2.5)
    assert metrics["drop_ratio"] == pytest.approx(0.2)
    assert (metrics["tasks"], metrics["rejected"]) == (40, 2)
    assert "node 4: metric 'qoe' is nan" in caplog.text
    assert strategy.aggregate_evaluate(1, replies[2:]) is None

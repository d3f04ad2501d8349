"""Property-based fuzzing of the strategy's reply path: no reply, however mutated, crashes a
round, half-adds to a sum, or is used; the valid replies' sums stay exact.

Every example builds real uploads (CKKS with the small ``ckks4096`` keys, or the plaintext
backend), mutates some of them so that each is invalid (bytes flipped, truncated, extended,
fields dropped or of the wrong type, extreme numbers, other rounds, other keys, duplicates,
nodes that were not sampled, records swapped between clients), runs ``Keco.aggregate_train``
on real Flower messages, and checks that the round completes, every mutated reply is counted
as rejected, and the global sums decrypt to exactly what the valid replies alone give.

``KECO_FUZZ_EXAMPLES`` sets the number of examples per property (default 40, for ``make test``);
``KECO_FUZZ_REPORT=<file.json>`` writes how many replies were mutated and rejected, and the
distinct rejection reasons (numbers masked) with their counts.
"""

from __future__ import annotations

import collections
import copy
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message, MessageType, Metadata
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.crypto import EncryptedVector, PlainBackend, make_backend
from common.crypto.params import load_he
from common.crypto.payload import digest
from common.protocol import METRICS, PAYLOAD, UPLOAD, build_upload, read_global
from server.strategy import Keco, to_recorddict

EXAMPLES = int(os.environ.get("KECO_FUZZ_EXAMPLES", "40"))
MODEL, CLASSES, ROUND, MAX_N = 300, 4, 3, 4000
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip


def _message(node: int, records: dict) -> Message:
    meta = Metadata(
        run_id=1, message_id=f"r{node}-{time.monotonic_ns()}", src_node_id=node, dst_node_id=0,
        reply_to_message_id=f"i{node}", group_id=str(ROUND), created_at=time.time(), ttl=600.0,
        message_type=MessageType.TRAIN,
    )  # fmt: skip
    configs = {k: v for k, v in records.items() if k != METRICS}
    metrics = {METRICS: records[METRICS]} if METRICS in records else None
    return Message(metadata=meta, content=to_recorddict(configs, metrics))


def _upload(backend, rng, role: str, n: int, logits_round: int = ROUND) -> dict:
    model = rng.normal(size=MODEL) if role == "x" else None
    knowledge = rng.normal(scale=3.0, size=(CLASSES, CLASSES))
    records = build_upload(backend, role, n, knowledge, model, logits_round).to_records()
    return {**records, METRICS: {"train_loss": 1.0, "compute_s": 0.5}}


def _set_chunk(records: dict, data: bytes, crc: bool = True) -> None:
    payload = records[PAYLOAD]
    payload["chunks"] = [data]
    if crc:  # a checksum that matches: the mutation must be caught further in
        payload["digests"] = [digest(data)]


# Each mutation turns a valid upload into an invalid one: (name, function(records, rng, ctx)).
def _flip(records, rng, ctx):
    data = bytearray(records[PAYLOAD]["chunks"][0])
    for i in rng.integers(0, len(data), size=8):
        data[i] ^= 0xFF
    _set_chunk(records, bytes(data), crc=False)


def _truncate(records, rng, ctx):
    data = records[PAYLOAD]["chunks"][0]
    _set_chunk(records, data[: int(rng.integers(0, len(data) - 1))])


def _extend(records, rng, ctx):
    data = records[PAYLOAD]["chunks"][0]
    _set_chunk(records, data + rng.bytes(int(rng.integers(1, 64))))


def _garbage(records, rng, ctx):
    _set_chunk(records, rng.bytes(len(records[PAYLOAD]["chunks"][0])))


def _drop_field(records, rng, ctx):
    where = UPLOAD if rng.random() < 0.5 else PAYLOAD
    keys = sorted(records[where])
    del records[where][keys[int(rng.integers(len(keys)))]]


def _drop_record(records, rng, ctx):
    del records[UPLOAD if rng.random() < 0.5 else PAYLOAD]


BAD_VALUES = ["seven", -3, 0, 0.5, 1e300, -1e300, 2**62, [1, 2], b"x", True]
"""Wrong values a Flower ConfigRecord can carry (it refuses None and mixed lists itself)."""


def _wrong_value(records, rng, ctx):
    field = [("num-examples", UPLOAD), ("logits-round", UPLOAD), ("role", UPLOAD),
             ("length", PAYLOAD), ("n-chunks", PAYLOAD), ("chunks", PAYLOAD),
             ("digests", PAYLOAD), ("scheme", PAYLOAD), ("packing", PAYLOAD),
             ("encryption", PAYLOAD), ("key-id", PAYLOAD)][int(rng.integers(11))]  # fmt: skip
    name, where = field
    if name == "num-examples":
        value = [MAX_N + 1, 0, -1, 2.5, 1e300, float("inf"), float("nan"), "10"][
            int(rng.integers(8))
        ]
    elif name == "logits-round":
        choices = [ROUND + 1, -1, 0, 10**9, "3", 2.0]
        # this round's logits are invalid for a stale upload, an earlier round's for the others
        choices.append(ROUND if records[UPLOAD]["role"] == "u" else ROUND - 1)
        value = choices[int(rng.integers(len(choices)))]
    else:
        value = BAD_VALUES[int(rng.integers(len(BAD_VALUES)))]
        if name == "length" and value in (0.5,):
            value = 0
    records[where][name] = value


def _other_key(records, rng, ctx):
    role = records[UPLOAD]["role"]
    other = _upload(ctx["stranger"], rng, role, int(records[UPLOAD]["num-examples"]))
    records[PAYLOAD] = other[PAYLOAD]


def _swap_role(records, rng, ctx):
    # the header of an on-time upload over a late one's payload, or the reverse
    records[UPLOAD]["role"] = "v" if records[UPLOAD]["role"] == "x" else "x"


def _bad_metric(records, rng, ctx):
    records[METRICS] = {"train_loss": float(["nan", "inf", "-inf"][int(rng.integers(3))])}


MUTATIONS = {
    "flip": _flip, "truncate": _truncate, "extend": _extend, "garbage": _garbage,
    "drop_field": _drop_field, "drop_record": _drop_record, "wrong_value": _wrong_value,
    "other_key": _other_key, "swap_role": _swap_role, "bad_metric": _bad_metric,
}  # fmt: skip


@pytest.fixture(scope="module")
def backends(keys):
    cfg, secret, public = keys("ckks4096")
    _, stranger, _ = keys("ckks4096", tag="stranger")
    plain = PlainBackend(load_he("off", poly_modulus_degree=4096))
    other = PlainBackend(load_he("off", poly_modulus_degree=4096, fraction_bits=11))
    return {
        "ckks": (make_backend(cfg, secret), make_backend(cfg, public), make_backend(cfg, stranger)),
        "plain": (plain, plain, other),  # plaintext has no key: other parameters instead
    }


TALLY: collections.Counter = collections.Counter()
"""Rejection reasons seen in this session (digits and quoted values masked)."""
MUTATED = [0]


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if path := os.environ.get("KECO_FUZZ_REPORT"):
        Path(path).write_text(json.dumps({
            "mutated_replies": MUTATED[0], "rejected": sum(TALLY.values()),
            "distinct_reasons": len(TALLY), "reasons": dict(TALLY.most_common()),
        }, indent=1) + "\n")  # fmt: skip


def _reason_kind(reason: str) -> str:
    masked = re.sub(r"'[^']*'|\"[^\"]*\"|b'.*'", "<v>", reason)
    masked = re.sub(r"\b[0-9a-f]{6,}\b", "<hex>", masked)
    return re.sub(r"[-+]?\d[\d.e+-]*|inf|nan", "<n>", masked)[:160]


def _round(backend_pair, replies, sampled, tally: bool = False):
    client, server = backend_pair
    strategy = Keco(server, MODEL, CLASSES, max_examples=MAX_N, max_uploads=64)
    strategy.expect_replies(ROUND, sampled)
    arrays, metrics = strategy.aggregate_train(ROUND, replies)
    if tally:
        TALLY.update(_reason_kind(reason) for _, _, reason in strategy.rejections)
    return read_global(client, strategy.sums_from_arrays(arrays), MODEL, CLASSES), metrics


@FUZZ
@given(
    scheme=st.sampled_from(["ckks", "plain"]),
    valid=st.lists(st.sampled_from(["x", "x", "u", "v"]), min_size=1, max_size=4),
    bad=st.lists(
        st.sampled_from(sorted(MUTATIONS) + ["duplicate", "unsampled"]), min_size=1, max_size=4
    ),  # fmt: skip
    seed=st.integers(0, 2**32 - 1),
)
def test_mutated_replies_are_rejected_and_the_valid_sums_stay_exact(
    backends, scheme, valid, bad, seed
):
    client, server, stranger = backends[scheme]
    rng = np.random.default_rng(seed)
    valid = ["x", *valid]  # at least one on time
    ctx = {"stranger": stranger}
    good = [
        _upload(client, rng, role, int(rng.integers(100, MAX_N)),
                ROUND - 1 if role == "u" else ROUND)
        for role in valid
    ]  # fmt: skip
    replies = [_message(100 + i, r) for i, r in enumerate(good)]
    sampled = {100 + i for i in range(len(good))}
    for j, kind in enumerate(bad):
        node = 500 + j
        if kind == "duplicate":  # a node's reply sent twice (a replay): one of them counts
            k = int(rng.integers(len(good)))
            replies.append(_message(100 + k, copy.deepcopy(good[k])))
            continue
        records = copy.deepcopy(good[int(rng.integers(len(good)))])
        if kind != "unsampled":  # an otherwise valid reply from a node nobody asked
            sampled.add(node)
            MUTATIONS[kind](records, rng, ctx)
        replies.append(_message(node, records))
    order = rng.permutation(len(replies))
    replies = [replies[i] for i in order]

    (model, soft), metrics = _round((client, server), replies, sampled, tally=True)
    MUTATED[0] += len(bad)

    assert metrics["rejected"] == len(bad), metrics
    assert metrics["set_x"] + metrics["set_u"] + metrics["set_v"] == len(good)
    # the valid replies alone, re-encoded for the plaintext backend: the same numbers, exactly
    plain = PlainBackend(load_he("off", poly_modulus_degree=4096))
    reference = [_message(100 + i, _as_plain(client, plain, r)) for i, r in enumerate(good)]
    want_model, want_soft = _round((plain, plain), reference, set(range(100, 100 + len(good))))[0]
    np.testing.assert_array_equal(model, want_model)
    np.testing.assert_array_equal(soft, want_soft)


def _as_plain(client, plain, records: dict) -> dict:
    """The same upload (the same fixed-point integers) encoded by the plaintext backend."""
    values = client.decrypt(EncryptedVector.from_dict(records[PAYLOAD]))
    return {**records, PAYLOAD: plain.encrypt(values).to_dict()}


@FUZZ
@given(data=st.binary(max_size=2048), field=st.sampled_from(["chunks", "digests", "key-id"]))
def test_arbitrary_bytes_never_crash_the_round(backends, data, field):
    client, server, _ = backends["ckks"]
    rng = np.random.default_rng(0)
    good = _upload(client, rng, "x", 500)
    bad = copy.deepcopy(good)
    bad[PAYLOAD][field] = [data] if field != "key-id" else data
    replies = [_message(1, good), _message(2, bad)]
    (model, _), metrics = _round((client, server), replies, {1, 2}, tally=True)
    MUTATED[0] += 1
    assert metrics["rejected"] == 1 and metrics["set_x"] == 1
    assert math.isfinite(float(np.abs(model).max()))

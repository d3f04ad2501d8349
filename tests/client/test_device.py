"""The device side of an instruction: a corrupted or forged global is refused with an error that
names what is wrong, and the client's state (its files and its next round) is untouched.

Real pieces: the composed config (shrunk), keys made by ``prepare_run_dir`` in the clients'
directory, the server's strategy building the instruction with the public context only, and
Hypothesis mutating it. ``KECO_FUZZ_EXAMPLES`` sets the number of examples (default 40).
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, Metadata, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.device import Device
from common.config import compose
from common.crypto import CryptoError, PayloadError
from common.crypto.payload import digest
from common.fed.prepare import prepare_run_dir
from common.fed.settings import federated_from_dict
from common.protocol import CONFIG, GLOBAL_PREFIX, UPLOAD, GlobalTerm
from server.run import build_strategy

EXAMPLES = int(os.environ.get("KECO_FUZZ_EXAMPLES", "40"))
SMALL = [
    "experiment=federation", "scenario=qeco", "scenario.n_devices=6", "scenario.n_slots=20",
    "he=ckks4096", "model=mlp", "model.hidden=[16]", "strategy.local.logits_source=student",
    "strategy.local.episodes=1", "strategy.local.epochs=1", "strategy.local.buffer_size=150",
    "strategy.local.eval_episodes=1", "strategy.proxy.size=48", "federation.num_clients=2",
]  # fmt: skip
X = GLOBAL_PREFIX + "x"
REFUSED = (PayloadError, CryptoError)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A device that finished round 1, the server's strategy, and a valid round-2 instruction."""
    cfg = federated_from_dict(compose(SMALL), tmp_path_factory.mktemp("run"))
    prepare_run_dir(cfg)
    strategy, arrays = build_strategy(cfg)
    sums = strategy.sums_from_arrays(arrays)
    device = Device(cfg, 0, cfg.states_dir)
    device.train(_message(strategy.instruction(1, sums, ConfigRecord())))
    records = _records(strategy.instruction(2, sums, ConfigRecord()))
    stranger = federated_from_dict(compose(SMALL), tmp_path_factory.mktemp("other"))
    prepare_run_dir(stranger)  # another run: other keys
    other, other_arrays = build_strategy(stranger)
    foreign = _records(other.instruction(2, other.sums_from_arrays(other_arrays), ConfigRecord()))
    return Setup(device, strategy, records, foreign[X])


class Setup(tuple):
    """The module's fixture (a short repr: Hypothesis prints it with a failing example)."""

    def __new__(cls, *parts):
        return super().__new__(cls, parts)

    def __repr__(self) -> str:
        return "<device after round 1, strategy, round-2 instruction, a foreign sum>"


def _records(content: RecordDict) -> dict[str, dict]:
    return {name: dict(rec) for name, rec in content.config_records.items()}


def _message(content: RecordDict | dict) -> Message:
    if isinstance(content, dict):
        content = RecordDict({name: ConfigRecord(rec) for name, rec in content.items()})
    meta = Metadata(
        run_id=1, message_id=f"i-{time.monotonic_ns()}", src_node_id=0, dst_node_id=1,
        reply_to_message_id="", group_id="2", created_at=time.time(), ttl=600.0,
        message_type=MessageType.TRAIN,
    )  # fmt: skip
    return Message(metadata=meta, content=content)


def _snapshot(device: Device) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(device.state_dir.iterdir())}


def _set_chunk(records: dict, data: bytes, crc: bool = True) -> None:
    records[X]["chunks"] = [data, *records[X]["chunks"][1:]]
    if crc:  # a checksum that matches: the client must catch it further in
        records[X]["digests"] = [digest(data), *records[X]["digests"][1:]]


def _forged(records, rng, ctx):
    """A global the server made itself (it holds the public key): values beyond any mean."""
    scale = float([1e3, -5e2, 200.0][int(rng.integers(3))])
    values = np.full(records[X]["length"], scale)
    records[X] = GlobalTerm(ctx["backend"].encrypt(values, bound=1e3), 1.0).to_record()


def _flip(records, rng, ctx):
    data = bytearray(records[X]["chunks"][0])
    for i in rng.integers(0, len(data), size=8):
        data[i] ^= 0xFF
    _set_chunk(records, bytes(data), crc=bool(rng.integers(2)))


MUTATIONS = {
    "flip": _flip,
    "truncate": lambda r, rng, c: _set_chunk(r, r[X]["chunks"][0][: int(rng.integers(1, 4000))]),
    "extend": lambda r, rng, c: _set_chunk(r, r[X]["chunks"][0] + rng.bytes(16)),
    "garbage": lambda r, rng, c: _set_chunk(r, rng.bytes(len(r[X]["chunks"][0]))),
    "drop_chunk": lambda r, rng, c: r[X].update(
        chunks=r[X]["chunks"][:-1], digests=r[X]["digests"][:-1]
    ),
    "drop_sums": lambda r, rng, c: r.pop(X, None),
    "drop_config": lambda r, rng, c: r.pop(CONFIG, None),
    "drop_field": lambda r, rng, c: r[CONFIG].pop(
        sorted(r[CONFIG])[int(rng.integers(len(r[CONFIG])))]
    ),
    "total": lambda r, rng, c: r[X].update(total=[0.0, -1.0, float("nan"), float("inf"), "2",
                                                  1e-300][int(rng.integers(6))]),  # fmt: skip
    "length": lambda r, rng, c: r[X].update(length=int(r[X]["length"]) + int(rng.integers(1, 9))),
    "other_run": lambda r, rng, c: r[CONFIG].update(
        {["keco.model-length", "keco.num-classes", "keco.knowledge-rows"][int(rng.integers(3))]:
         int(rng.integers(2, 50))}
    ),  # fmt: skip
    "bad_setting": lambda r, rng, c: r[CONFIG].update(
        [{"server-round": 0}, {"server-round": "2"}, {"keco.delta": float("nan")},
         {"keco.delta": 1.5}, {"keco.temperature": 0.0}, {"keco.temperature": float("inf")},
         {"keco.deadline-s": -1.0}, {"keco.knowledge": 1}][int(rng.integers(8))]
    ),  # fmt: skip
    "other_key": lambda r, rng, c: r.update({X: copy.deepcopy(c["foreign"])}),
    "forged": _forged,
    "tiny_total": lambda r, rng, c: r[X].update(total=float(2**-60)),
    "late_as_model": lambda r, rng, c: r.update({GLOBAL_PREFIX + "u": copy.deepcopy(r[X]),
                                                 GLOBAL_PREFIX + "v": copy.deepcopy(r[X])}),
}  # fmt: skip
LAST = ("drop_sums", "drop_config")  # the others mutate what these remove
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip


@FUZZ
@given(kinds=st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3),
       seed=st.integers(0, 2**32 - 1))  # fmt: skip
def test_a_corrupted_global_is_refused_and_the_state_kept(setup, kinds, seed):
    device, strategy, records, foreign = setup
    rng = np.random.default_rng(seed)
    before = _snapshot(device)
    ctx = {"foreign": foreign, "backend": strategy.backend}
    bad = copy.deepcopy(records)
    for kind in sorted(kinds, key=lambda k: k in LAST):
        MUTATIONS[kind](bad, rng, ctx)
    with pytest.raises(REFUSED) as refused:
        device.train(_message(bad))
    assert len(str(refused.value)) > 20  # says what is wrong
    with pytest.raises(REFUSED):
        device.evaluate(_message(bad))
    assert _snapshot(device) == before


def test_the_valid_instruction_still_trains_after_the_refusals(setup):
    device, _, records, _ = setup
    assert not any(p.name.endswith("-r2.npz") for p in device.state_dir.iterdir())
    reply = device.train(_message(copy.deepcopy(records)))
    assert reply.config_records[UPLOAD]["num-examples"] > 0
    assert any(p.name.endswith("-r2.npz") for p in device.state_dir.iterdir())

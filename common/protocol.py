"""The KECO message layout shared by the server strategy and the client app (no Flower import).

Records are represented as plain dicts, ``{record_name: {key: value}}``, whose values Flower's
``ConfigRecord`` accepts (str, int, float, bool, bytes and lists of them); ``server/`` and
``client/`` wrap them in Flower records. Ciphertexts travel as ``list[bytes]`` chunks.

Train instruction (server → clients):

| record            | Flower type  | content                                                 |
| ----------------- | ------------ | ------------------------------------------------------- |
| ``config``        | ConfigRecord | :class:`RoundSettings` (``server-round``, ``keco.*``)   |
| ``keco.global.x`` | ConfigRecord | payload of Σ_x n_i·[W, G] and ``total`` = Σ_x n_i       |
| ``keco.global.u`` | ConfigRecord | Σ_u n_i·G_t (stale late logits), Σ_u n_i; absent if ∅   |
| ``keco.global.v`` | ConfigRecord | Σ_v n_i·G_{t+1} (fresh late logits), Σ_v n_i; absent if ∅ |

Train reply (client → server):

| record           | Flower type  | content                                                       |
| ---------------- | ------------ | ------------------------------------------------------------- |
| ``keco.upload``  | ConfigRecord | ``role`` (x, u or v), ``num-examples`` n_i, ``logits-round``   |
| ``keco.payload`` | ConfigRecord | Enc(n_i·[W, G]) for role x, Enc(n_i·G) for roles u and v      |
| ``metrics``      | MetricRecord | client metrics (e.g. ``train_loss``), optional                 |

Evaluate: the instruction carries ``config`` and the same ``keco.global.*`` records; the reply
carries ``metrics`` with ``tasks`` (the weight) and the simulator metrics.

The plaintext baselines (FedAvg, FedMeta2Ag) use Flower's FedAvg layout: the instruction carries
``arrays`` (the flat ``student``) and ``config`` (``server-round``, ``keco.delta``,
``keco.temperature``, ``keco.deadline-s``); the train reply carries ``arrays`` (none when a late
update is dropped) and ``metrics`` (``num-examples``, ``late``, ``compute_s``, and
``edge-group`` under FedMeta2Ag).

The server only adds payloads of one role and sums their n_i; clients decrypt and divide:
``W = X_W / Σ_x n``, ``G = X_G / Σ_x n + U / Σ_u n − V / Σ_v n`` (KECO's correction Δ; a term is
absent when its set is empty or the correction is switched off). Round 1 uses the initial
``W_0, G_0`` encrypted by the server with the public key (weight ``s``, total ``s``), so that
clients read every round the same way. Values travel as fixed-point integers, so every sum is
exact and encryption never changes a result (:mod:`common.crypto.backend`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.crypto.backend import Backend
from common.crypto.packing import (
    as_knowledge,
    pack_model_and_labels,
    unpack_model_and_labels,
)
from common.crypto.payload import EncryptedVector, PayloadError

# ---- record names and keys ------------------------------------------------------------------
# Every record name, key and role code the server and the clients exchange is defined here once;
# ``server/``, ``client/`` and ``common/fed`` import them (values are the wire format: never
# change one without changing both sides and the committed results that read them).

# record names
CONFIG = "config"
"""ConfigRecord of an instruction: round settings plus run-level entries (the name Flower's
FedAvg uses too, its ``configrecord_key``)."""
ARRAYS = "arrays"
"""ArrayRecord of a FedAvg/FedMeta2Ag instruction and train reply: the plaintext student (the
name Flower's FedAvg uses, its ``arrayrecord_key``)."""
GLOBAL_PREFIX = "keco.global."
"""ConfigRecords ``keco.global.x/u/v`` of an instruction: one global sum each."""
UPLOAD = "keco.upload"
"""ConfigRecord of a train reply: role, n_i and the round of the logits."""
PAYLOAD = "keco.payload"
"""ConfigRecord of a train reply: the encrypted upload."""
METRICS = "metrics"
"""MetricRecord of a reply: client metrics."""
RECORD_NAMES = (CONFIG, ARRAYS, UPLOAD, PAYLOAD, METRICS)
"""The fixed record names (the ``keco.global.*`` ones are :data:`GLOBAL_PREFIX` + a role)."""

# keys of the ``config`` record (:class:`RoundSettings`; plaintext strategies send the round,
# δ_t, T_t and the deadline only)
SERVER_ROUND_KEY = "server-round"
"""The server round (the key Flower's strategies write the round under too)."""
MODEL_LENGTH_KEY = "keco.model-length"
NUM_CLASSES_KEY = "keco.num-classes"
KNOWLEDGE_ROWS_KEY = "keco.knowledge-rows"
KNOWLEDGE_KEY = "keco.knowledge"
DELTA_KEY = "keco.delta"
TEMPERATURE_KEY = "keco.temperature"
DEADLINE_KEY = "keco.deadline-s"
CORRECTION_KEY = "keco.correction"
SETTINGS_KEYS = {
    "server_round": SERVER_ROUND_KEY,
    "model_length": MODEL_LENGTH_KEY,
    "num_classes": NUM_CLASSES_KEY,
    "knowledge_rows": KNOWLEDGE_ROWS_KEY,
    "knowledge": KNOWLEDGE_KEY,
    "delta": DELTA_KEY,
    "temperature": TEMPERATURE_KEY,
    "deadline_s": DEADLINE_KEY,
    "correction": CORRECTION_KEY,
}
"""Config-record key of each :class:`RoundSettings` field, in the order they are sent."""

# keys of the ``keco.upload`` header and of a ``keco.global.*`` record (the payload's own keys
# are :data:`common.crypto.payload.FIELDS`)
ROLE_KEY = "role"
"""The client's set: one of :data:`ROLES`."""
NUM_EXAMPLES_KEY = "num-examples"
"""n_i, the weight of an upload; also the train/evaluate metric FedAvg weighs by (its
``weighted_by_key``)."""
LOGITS_ROUND_KEY = "logits-round"
"""The round whose local training produced the uploaded logits."""
TOTAL_KEY = "total"
"""The plaintext Σ n_i of a global sum."""

# keys of the initial ArrayRecord (``Strategy.start``) and of FedAvg's ArrayRecord
INIT_MODEL = "model"
"""Key of the flat initial model W_0 in the initial ArrayRecord."""
INIT_SOFT_LABELS = "soft-labels"
"""Key of the initial soft-label knowledge G_0 (rows × (M+1)) in the initial ArrayRecord."""
STUDENT_KEY = "student"
"""Key of the flat student in FedAvg's (and FedMeta2Ag's) ArrayRecord."""

# keys of the ``metrics`` record of a reply that the server reads
EVAL_WEIGHT = "tasks"
"""Evaluation metrics are averaged weighted by the number of tasks each client simulated."""
LATE_KEY = "late"
"""Train metric: 1 when the client was over the round's deadline (FedAvg-style strategies
that drop late updates get a reply without arrays)."""
COMPUTE_KEY = "compute_s"
"""Train metric: the client's simulated compute seconds for what it sent."""
EDGE_GROUP_KEY = "edge-group"
"""Train metric of FedMeta2Ag: the MEC-L edge server the client belongs to (an integer)."""
TRAIN_LOSS_KEY = "train_loss"
"""Train metric: the client's local training loss (absent when it did not train)."""
TRAIN_ACCURACY_KEY = "train_accuracy"
"""Train metric: how often the student picks a best action on the client's buffer."""
EPISODES_KEY = "episodes"
"""Train metric: episodes simulated for the round."""
TRAIN_STEPS_KEY = "train_steps"
"""Train metric: optimiser steps taken in the round."""
SUMMED_METRICS = (EPISODES_KEY, TRAIN_STEPS_KEY)
"""Client train metrics that the server sums over the replies (the round's budget: episodes
simulated, optimiser steps taken); every other metric is a weighted mean."""
EVAL_METRICS = ("qoe", "drop_ratio", "delay", "energy_total", "offload_ratio", EVAL_WEIGHT)
"""Evaluation metrics (the simulator's, :func:`common.mec.evaluate_policy`) the server records
per round, as ``eval_<name>``."""

# role codes (the ``role`` of an upload)
ROLE_ON_TIME = "x"
"""Finished before the deadline: uploads Enc(n_i·[W, G])."""
ROLE_STALE = "u"
"""Late; uploads the logits of its last finished round, Enc(n_i·G_t)."""
ROLE_FRESH = "v"
"""Late; uploads this round's logits, Enc(n_i·G_{t+1})."""
ROLES = (ROLE_ON_TIME, ROLE_STALE, ROLE_FRESH)


def expected_length(role: str, model_length: int, num_classes: int, rows: int | None = None) -> int:
    """Plaintext length of an upload of ``role`` (knowledge of ``rows`` × ``num_classes``;
    ``rows`` defaults to ``num_classes``: the per-class table)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
    table = (num_classes if rows is None else rows) * num_classes
    return model_length + table if role == ROLE_ON_TIME else table


# ---- round settings -------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundSettings:
    """What a client needs besides the global sums to run a KECO round."""

    server_round: int
    model_length: int
    """P, the length of the flat student vector W."""
    num_classes: int
    """M+1 actions: the columns of G."""
    knowledge_rows: int
    """Rows of G: M+1 for the per-class table, the proxy-set size for proxy knowledge."""
    knowledge: bool
    """Whether G holds the federation's knowledge yet (not in round 1: clients then train on
    their targets alone)."""
    delta: float
    """δ_t, weight of the hard-label loss (1 − δ_t for the soft-label loss)."""
    temperature: float
    """T_t, distillation temperature."""
    deadline_s: float
    """Budget of simulated local compute per round, seconds; later clients are in set y."""
    correction: bool
    """Whether the server forms Δ from late clients (off for the ablation)."""

    def to_config(self) -> dict[str, Any]:
        """The entries of the instruction's ``config`` record (:data:`SETTINGS_KEYS`)."""
        return {
            SERVER_ROUND_KEY: self.server_round,
            MODEL_LENGTH_KEY: self.model_length,
            NUM_CLASSES_KEY: self.num_classes,
            KNOWLEDGE_ROWS_KEY: self.knowledge_rows,
            KNOWLEDGE_KEY: bool(self.knowledge),
            DELTA_KEY: float(self.delta),
            TEMPERATURE_KEY: float(self.temperature),
            DEADLINE_KEY: float(self.deadline_s),
            CORRECTION_KEY: bool(self.correction),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RoundSettings:
        """Read and check the instruction's ``config`` record; raises :class:`PayloadError`."""
        keys = SETTINGS_KEYS
        missing = [k for k in keys.values() if k not in config]
        if missing:
            raise PayloadError(f"the instruction's config record lacks {missing}")
        values = {name: config[key] for name, key in keys.items()}
        checks = {  # what each field may be; anything else is a corrupted instruction
            "server_round": lambda v: _is_int(v) and v >= 1,
            "model_length": lambda v: _is_int(v) and v >= 0,
            "num_classes": lambda v: _is_int(v) and v >= 2,
            "knowledge_rows": lambda v: _is_int(v) and v >= 1,
            "knowledge": lambda v: isinstance(v, bool),
            "delta": lambda v: _is_number(v) and 0.0 <= v <= 1.0,
            "temperature": lambda v: _is_number(v) and 0.0 < v < math.inf,
            "deadline_s": lambda v: _is_number(v) and v > 0,
            "correction": lambda v: isinstance(v, bool),
        }
        for name, ok in checks.items():
            if not ok(values[name]):
                raise PayloadError(f"the instruction's {keys[name]}={values[name]!r} is not valid")
        return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


# ---- global sums (server → clients) ---------------------------------------------------------
@dataclass(frozen=True)
class GlobalTerm:
    """One global sum: the payload Σ n_i·vector over a set and its plaintext total Σ n_i."""

    payload: EncryptedVector
    total: float

    def to_record(self) -> dict[str, Any]:
        return {**self.payload.to_dict(), TOTAL_KEY: float(self.total)}

    @classmethod
    def from_record(cls, raw: Mapping[str, Any]) -> GlobalTerm:
        total = raw.get(TOTAL_KEY)
        if not isinstance(total, (int, float)) or not math.isfinite(total) or total <= 0:
            raise PayloadError(f"global sum has total {total!r}; expected a positive number")
        return cls(EncryptedVector.from_dict(raw), float(total))


@dataclass(frozen=True)
class GlobalSums:
    """The global state the server holds and sends: sums for sets x, u and v."""

    x: GlobalTerm
    u: GlobalTerm | None = None
    v: GlobalTerm | None = None

    def terms(self) -> dict[str, GlobalTerm]:
        pairs = ((ROLE_ON_TIME, self.x), (ROLE_STALE, self.u), (ROLE_FRESH, self.v))
        return {role: term for role, term in pairs if term is not None}

    @property
    def nbytes(self) -> int:
        """Ciphertext bytes of all terms (what one client downloads, metadata aside)."""
        return sum(t.payload.nbytes for t in self.terms().values())

    def to_records(self) -> dict[str, dict[str, Any]]:
        """``{"keco.global.<role>": record}`` for the instruction's ConfigRecords."""
        return {GLOBAL_PREFIX + role: term.to_record() for role, term in self.terms().items()}

    @classmethod
    def from_records(cls, configs: Mapping[str, Mapping[str, Any]]) -> GlobalSums:
        """Read the ``keco.global.*`` records of an instruction."""
        if GLOBAL_PREFIX + ROLE_ON_TIME not in configs:
            raise PayloadError(f"the instruction lacks the {GLOBAL_PREFIX + ROLE_ON_TIME} record")
        terms = {
            role: GlobalTerm.from_record(configs[GLOBAL_PREFIX + role])
            for role in ROLES
            if GLOBAL_PREFIX + role in configs
        }
        return cls(terms[ROLE_ON_TIME], terms.get(ROLE_STALE), terms.get(ROLE_FRESH))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The state as uint8 arrays, for a Flower ArrayRecord (what ``Strategy.start`` carries)."""
        arrays: dict[str, np.ndarray] = {}
        for role, term in self.terms().items():
            meta = {k: v for k, v in term.to_record().items() if k != "chunks"}
            arrays[f"{GLOBAL_PREFIX}{role}.meta"] = _bytes_array(json.dumps(meta).encode())
            for k, chunk in enumerate(term.payload.chunks):
                arrays[f"{GLOBAL_PREFIX}{role}.chunk.{k}"] = _bytes_array(chunk)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> GlobalSums:
        """Inverse of :meth:`to_arrays`."""
        records: dict[str, dict[str, Any]] = {}
        for role in ROLES:
            meta_key = f"{GLOBAL_PREFIX}{role}.meta"
            if meta_key not in arrays:
                continue
            meta = json.loads(np.asarray(arrays[meta_key], dtype=np.uint8).tobytes())
            meta["chunks"] = [
                np.asarray(arrays[f"{GLOBAL_PREFIX}{role}.chunk.{k}"], dtype=np.uint8).tobytes()
                for k in range(meta["n-chunks"])
            ]
            records[GLOBAL_PREFIX + role] = meta
        return cls.from_records(records)

    @staticmethod
    def in_arrays(keys: Any) -> bool:
        """Whether an ArrayRecord's keys hold global sums (rather than plaintext initial arrays)."""
        return f"{GLOBAL_PREFIX}{ROLE_ON_TIME}.meta" in set(keys)


def _bytes_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def initial_arrays(model: np.ndarray, soft_labels: np.ndarray) -> dict[str, np.ndarray]:
    """Plaintext ``W_0`` (flat) and ``G_0`` for the ArrayRecord given to ``Strategy.start``."""
    return {
        INIT_MODEL: np.asarray(model, dtype=np.float64).ravel(),
        INIT_SOFT_LABELS: as_knowledge(soft_labels),
    }


def initial_weight(max_examples: int) -> float:
    """The weight ``s`` of the round-1 state: the largest power of two not above the largest
    n_i of the run. Encrypting ``s·[W_0, G_0]`` with total ``s`` means ``[W_0, G_0]`` but on a
    fixed-point grid ``s`` times finer, as the n_i of later rounds give, and stays within the
    headroom the run's HE parameters were checked for (:meth:`HEConfig.check_run`)."""
    return float(2.0 ** max(0, math.floor(math.log2(max(1, max_examples)))))


def initial_sums(
    backend: Backend, model: np.ndarray, soft_labels: np.ndarray, max_examples: int
) -> GlobalSums:
    """Round-1 state: ``s·[W_0, G_0]`` encrypted with the (public) key, total ``s``."""
    packed = pack_model_and_labels(model, soft_labels)
    weight = initial_weight(max_examples)
    payload = backend.encrypt(packed * weight, bound=weight * backend.value_bound)
    return GlobalSums(GlobalTerm(payload, weight))


def read_global(
    backend: Backend, sums: GlobalSums, model_length: int, num_classes: int, rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Client side: decrypt the global sums and divide by the totals; return ``(W, G)``.

    ``G`` includes KECO's correction Δ = U/Σ_u n − V/Σ_v n when both late sets are present.
    """
    rows = num_classes if rows is None else rows
    packed_len = expected_length(ROLE_ON_TIME, model_length, num_classes, rows)
    flat = backend.decrypt(_checked(sums.x.payload, packed_len)) / sums.x.total
    model, soft_labels = unpack_model_and_labels(flat, model_length, num_classes, rows)
    _check_bound(model, backend.value_bound, "model")
    table_len = rows * num_classes
    # Δ is the difference between stale (u) and fresh (v) late logits: with one side missing
    # it would subtract (or add) a whole soft-label table, so it needs both
    if sums.u is not None and sums.v is not None:
        for term, sign in ((sums.u, 1.0), (sums.v, -1.0)):
            late = backend.decrypt(_checked(term.payload, table_len)) / term.total
            soft_labels = soft_labels + sign * late.reshape(rows, num_classes)
    _check_bound(soft_labels, 3 * backend.value_bound, "soft-label knowledge")  # G + U − V
    return model, soft_labels


def _check_bound(values: np.ndarray, bound: float, what: str) -> None:
    """A mean of uploads bounded by ``he.value_bound`` is bounded too: anything beyond is a
    corrupted (or forged) global, refused before it touches the client's model."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if not math.isfinite(peak) or peak > bound:
        raise PayloadError(
            f"the global {what} holds a value of magnitude {peak:.3g}, beyond the {bound:g} any "
            f"mean of valid uploads can reach: a corrupted global, refused"
        )


def _checked(payload: EncryptedVector, length: int) -> EncryptedVector:
    if payload.length != length:
        raise PayloadError(f"global sum has length {payload.length}, expected {length}")
    return payload


# ---- uploads (client → server) --------------------------------------------------------------
@dataclass(frozen=True)
class TrainUpload:
    """A train reply: the client's set, its weight n_i and its encrypted upload."""

    role: str
    num_examples: float
    """n_i = |A'_i|, the number of local samples behind the upload (plaintext)."""
    payload: EncryptedVector
    logits_round: int
    """The round whose local training produced the logits (earlier than now for role u)."""

    def to_records(self) -> dict[str, dict[str, Any]]:
        """``{UPLOAD: header, PAYLOAD: payload}`` for the reply's ConfigRecords."""
        header = {
            ROLE_KEY: self.role,
            NUM_EXAMPLES_KEY: self.num_examples,
            LOGITS_ROUND_KEY: self.logits_round,
        }
        return {UPLOAD: header, PAYLOAD: self.payload.to_dict()}

    @classmethod
    def from_records(cls, configs: Mapping[str, Mapping[str, Any]]) -> TrainUpload:
        """Read a reply's records; raises :class:`PayloadError` naming what is wrong."""
        for name in (UPLOAD, PAYLOAD):
            if name not in configs:
                raise PayloadError(f"reply lacks the {name!r} record")
        header = configs[UPLOAD]
        role = header.get(ROLE_KEY)
        if role not in ROLES:
            raise PayloadError(f"role {role!r} is not one of {list(ROLES)}")
        n = header.get(NUM_EXAMPLES_KEY)
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n <= 0:
            raise PayloadError(f"num-examples n_i={n!r} must be a positive finite number")
        logits_round = header.get(LOGITS_ROUND_KEY, 0)
        if not isinstance(logits_round, int):
            raise PayloadError(f"logits-round {logits_round!r} must be an integer")
        return cls(role, n, EncryptedVector.from_dict(configs[PAYLOAD]), logits_round)


def build_upload(
    backend: Backend,
    role: str,
    num_examples: float,
    soft_labels: np.ndarray,
    model: np.ndarray | None = None,
    logits_round: int = 0,
) -> TrainUpload:
    """Client side: encrypt ``n_i·[W, G]`` (role x) or ``n_i·G`` (roles u, v).

    The client multiplies by n_i in plaintext so that the server only adds ciphertexts.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
    if isinstance(num_examples, bool) or not math.isfinite(num_examples) or num_examples <= 0:
        raise ValueError(f"num_examples must be a positive number, got {num_examples!r}")
    if role == ROLE_ON_TIME:
        if model is None:
            raise ValueError("role 'x' (on time) uploads the model: pass model=W")
        vector = pack_model_and_labels(model, soft_labels)
    else:
        if model is not None:
            raise ValueError(f"late clients (role {role!r}) upload logits only; drop model=")
        vector = as_knowledge(soft_labels).ravel()
    payload = backend.encrypt(num_examples * vector, bound=num_examples * backend.value_bound)
    return TrainUpload(role, num_examples, payload, logits_round)

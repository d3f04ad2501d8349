"""The KECO strategy on Flower's Message API: add-only aggregation of encrypted uploads.

Each round the strategy sends the global sums (ciphertexts) with their plaintext weight totals,
δ_t, T_t and the deadline; clients answer as on-time (set x: Enc(n_i·[W, G])) or late (set u:
stale logits, set v: fresh logits). The server validates every reply, adds the ciphertexts of
each set and sums the n_i; clients divide after decrypting (``common.protocol.read_global``).
With ``he=off`` the same code runs on the plaintext backend.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from common.crypto import Backend, CryptoError, LoadedVector, PayloadError
from common.protocol import (
    COMPUTE_KEY,
    CONFIG,
    EVAL_WEIGHT,
    INIT_MODEL,
    INIT_SOFT_LABELS,
    METRICS,
    ROLE_FRESH,
    ROLE_ON_TIME,
    ROLE_STALE,
    ROLES,
    SUMMED_METRICS,
    GlobalSums,
    GlobalTerm,
    RoundSettings,
    TrainUpload,
    expected_length,
    initial_sums,
)
from server.fedavg import round_seconds

Schedule = float | Callable[[int], float]
"""A per-round value: a constant or a function of the server round (1-based)."""


class RoundFailedError(RuntimeError):
    """Too few valid replies to form the global model; the message lists what was dropped."""


def _at(schedule: Schedule, server_round: int) -> float:
    return float(schedule(server_round) if callable(schedule) else schedule)


def config_records(content: RecordDict) -> dict[str, dict[str, Any]]:
    """A RecordDict's ConfigRecords as plain dicts (the form ``common.protocol`` reads)."""
    return {name: dict(record) for name, record in content.config_records.items()}


def to_recorddict(
    configs: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    arrays: Mapping[str, ArrayRecord] | None = None,
) -> RecordDict:
    """Wrap ``common.protocol`` dicts in Flower records."""
    records: dict[str, Any] = {name: ConfigRecord(dict(c)) for name, c in configs.items()}
    records.update({name: MetricRecord(dict(m)) for name, m in (metrics or {}).items()})
    records.update(dict(arrays or {}))
    return RecordDict(records)


def _scalar_metrics(content: RecordDict) -> dict[str, float]:
    """The client's scalar metrics; raises PayloadError on a non-finite value."""
    if METRICS not in content.metric_records:
        return {}
    out: dict[str, float] = {}
    for key, value in content.metric_records[METRICS].items():
        if isinstance(value, list):
            continue  # lists (e.g. per-class values) are not averaged across clients
        if not math.isfinite(value):
            raise PayloadError(f"metric {key!r} is {value}")
        out[key] = float(value)
    return out


class Keco(Strategy):
    """KECO: weighted parameter and logit aggregation with the late-client correction Δ.

    Parameters
    ----------
    backend
        The server's crypto backend: CKKS from ``public.ctx`` (no secret key) or plaintext.
    model_length, num_classes, knowledge_rows
        P (length of the flat student vector), M+1 (actions) and the rows of the soft-label
        knowledge G (M+1 for the per-class table, the proxy-set size for proxy knowledge).
    delta, temperature
        δ_t and T_t sent to the clients each round (``common.distill`` provides schedules).
    deadline_s
        Simulated local compute budget per round, seconds; clients over it reply as late.
    correction
        Form Δ from late clients (sets u and v); ``False`` ignores late uploads (ablation).
    min_replies
        Fewest valid, used replies for a round to go on (at least one must be on time).
    fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes, min_available_nodes
        Node sampling, as in Flower's ``FedAvg``.
    uplink_mbps
        The clients' uplink, for the round's simulated time (``sim_seconds``).
    after_aggregate
        ``(sums, round) -> sums`` applied to the new global state (plaintext only: the
        server-side distillation of KECO's steps 5–6).
    max_examples
        The largest weight n_i of the run (the clients' buffer size): a reply with a larger
        one is rejected, and the round-1 state is weighted by the largest power of two below it.
    max_uploads
        The most uploads one sum may hold (the clients sampled per round, what the HE
        parameters were checked for); further ones are rejected.
    """

    # pylint: disable=too-many-arguments,too-many-instance-attributes
    def __init__(
        self,
        backend: Backend,
        model_length: int,
        num_classes: int,
        knowledge_rows: int | None = None,
        *,
        delta: Schedule = 0.75,
        temperature: Schedule = 1.0,
        deadline_s: Schedule = math.inf,
        correction: bool = True,
        min_replies: int = 1,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        uplink_mbps: float = 20.0,
        after_aggregate: Callable[[GlobalSums, int], GlobalSums] | None = None,
        max_examples: int = 2**20,
        max_uploads: int = 1024,
    ) -> None:
        if backend.scheme != "plain" and backend.can_decrypt:
            raise CryptoError(
                "the KECO server was given a context with the secret key; load public.ctx "
                "(the server must not be able to decrypt)"
            )
        knowledge_rows = num_classes if knowledge_rows is None else knowledge_rows
        if model_length < 0 or num_classes < 2 or knowledge_rows < 1:
            raise ValueError(
                f"model_length must be >= 0, num_classes >= 2 and knowledge_rows >= 1, got "
                f"{model_length}, {num_classes}, {knowledge_rows}"
            )
        if min_replies < 1:
            raise ValueError(f"min_replies must be >= 1, got {min_replies}")
        self.backend = backend
        self.model_length = model_length
        self.num_classes = num_classes
        self.knowledge_rows = knowledge_rows
        self.delta = delta
        self.temperature = temperature
        self.deadline_s = deadline_s
        self.correction = correction
        self.min_replies = min_replies
        self.fraction_train = fraction_train
        self.fraction_evaluate = fraction_evaluate
        self.min_train_nodes = min_train_nodes
        self.min_evaluate_nodes = min_evaluate_nodes
        self.min_available_nodes = min_available_nodes
        self.uplink_mbps = uplink_mbps
        self.after_aggregate = after_aggregate
        self.max_examples = max_examples
        self.max_uploads = max_uploads
        self._sampled: dict[int, set[int]] = {}
        self.rejections: list[tuple[int, int, str]] = []
        """Every rejected train reply of the run: ``(round, node, reason)``."""
        self.global_sums: GlobalSums | None = None
        """The latest global state (also returned to ``start`` as an ArrayRecord)."""
        self._bytes_down: dict[int, int] = {}

    # ---- Strategy API -------------------------------------------------------------------
    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> KECO: backend %s (params %s, key %s)", self.backend.scheme,
            self.backend.params_hash, self.backend.key_id)  # fmt: skip
        log(INFO, "\t│\t├── model length %d, classes %d, correction Δ %s",
            self.model_length, self.num_classes, "on" if self.correction else "off")  # fmt: skip
        log(INFO, "\t│\t└── min replies %d", self.min_replies)
        log(INFO, "\t└──> Sampling: fraction train %.2f | evaluate %.2f; min nodes train %d | "
            "evaluate %d | available %d", self.fraction_train, self.fraction_evaluate,
            self.min_train_nodes, self.min_evaluate_nodes, self.min_available_nodes)  # fmt: skip

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global sums, their totals, δ_t, T_t and the deadline to sampled nodes."""
        if self.fraction_train == 0.0:
            return []
        sums = self.sums_from_arrays(arrays)
        node_ids = self._sample(grid, self.fraction_train, self.min_train_nodes, "train")
        content = self.instruction(server_round, sums, config)
        self._bytes_down[server_round] = sums.nbytes * len(node_ids)
        self.expect_replies(server_round, node_ids)
        return [Message(content, dst_node_id=n, message_type=MessageType.TRAIN) for n in node_ids]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate replies, add the ciphertexts of sets x, u and v, sum their weights.

        Returns the new global sums as an ArrayRecord (``GlobalSums.to_arrays``) and a
        MetricRecord with the clients' metrics averaged by n_i plus ``set_x``, ``set_u``,
        ``set_v``, ``rejected`` (invalid replies), ``failed`` (error replies),
        ``ignored_late`` (correction off), ``total_x/u/v`` (Σ n_i), ``bytes_up`` (ciphertext
        bytes received), ``bytes_down`` (ciphertext bytes sent), ``aggregate_ms``,
        ``delta_formed`` (1 when both late sets were there, so clients form Δ), ``values_up``
        (plaintext values the used uploads carry) and
        ``sim_seconds`` (slowest used client's compute plus upload time). Raises
        :class:`RoundFailedError` when fewer than ``min_replies`` usable replies remain or none
        is on time.
        """
        start = time.perf_counter()
        sums = {role: self.backend.new_sum(self._length(role)) for role in ROLES}
        totals = dict.fromkeys(ROLES, 0.0)
        rejected: list[tuple[int, str]] = []
        failed = ignored = bytes_up = 0
        timed: list[tuple[float, int]] = []  # (compute seconds, upload bytes) of used replies
        values_up = 0  # plaintext values the used uploads carry
        key_weight: dict[str, float] = {}
        weighted: dict[str, float] = {}
        seen: set[int] = set()
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                failed += 1
                log(WARNING, "round %d: node %d replied with an error: %s",
                    server_round, node, msg.error.reason)  # fmt: skip
                continue
            # Everything that touches one reply runs in this guard: whatever fails (a malformed
            # field, a ciphertext SEAL refuses, an addition that raises) costs that reply only,
            # and a reply is added in full or not at all.
            try:
                upload, loaded, client_metrics = self._accept(server_round, msg, seen)
                bytes_up += upload.payload.nbytes
                if upload.role != ROLE_ON_TIME and not self.correction:
                    ignored += 1  # the Δ ablation: late logits are not used
                    continue
                if sums[upload.role].count >= self.max_uploads:
                    raise PayloadError(
                        f"more than {self.max_uploads} {upload.role!r} uploads this round, the "
                        f"most the HE parameters leave headroom for"
                    )
                sums[upload.role].add(loaded)
            except Exception as err:  # noqa: BLE001 - one bad reply must not end the round
                reason = str(err) if isinstance(err, PayloadError) else (
                    f"{type(err).__name__} while handling it: {err}"
                )  # fmt: skip
                rejected.append((node, reason))
                self.rejections.append((server_round, node, reason))
                log(WARNING, "round %d: rejected the reply from node %d: %s",
                    server_round, node, reason)  # fmt: skip
                continue
            timed.append((client_metrics.get(COMPUTE_KEY, 0.0), upload.payload.nbytes))
            values_up += upload.payload.length
            totals[upload.role] += upload.num_examples
            for key, value in client_metrics.items():
                w = 1.0 if key in SUMMED_METRICS else upload.num_examples
                weighted[key] = weighted.get(key, 0.0) + w * value
                key_weight[key] = key_weight.get(key, 0.0) + w
        used = sum(s.count for s in sums.values())
        if used < self.min_replies or sums[ROLE_ON_TIME].count == 0:
            reasons = "; ".join(f"node {n}: {r}" for n, r in rejected) or "none"
            raise RoundFailedError(
                f"round {server_round}: {used} usable replies ({sums[ROLE_ON_TIME].count} on "
                f"time) but min_replies={self.min_replies} and at least one on-time reply are "
                f"needed; {failed} replies were errors, {len(rejected)} rejected ({reasons})"
            )
        terms = {
            role: GlobalTerm(payload, totals[role])
            for role in ROLES
            if (payload := sums[role].result()) is not None
        }
        self.global_sums = GlobalSums(
            terms[ROLE_ON_TIME], terms.get(ROLE_STALE), terms.get(ROLE_FRESH)
        )
        delta_formed = self.global_sums.u is not None and self.global_sums.v is not None
        if self.after_aggregate is not None:
            self.global_sums = self.after_aggregate(self.global_sums, server_round)
        # each metric is averaged over the clients that reported it (late clients do not train,
        # so they report no train_loss); the budget counters are summed
        metrics = {
            key: value if key in SUMMED_METRICS else value / key_weight[key]
            for key, value in weighted.items()
        }
        metrics.update(
            {
                "set_x": sums[ROLE_ON_TIME].count,
                "set_u": sums[ROLE_STALE].count,
                "set_v": sums[ROLE_FRESH].count,
                "rejected": len(rejected),
                "failed": failed,
                "ignored_late": ignored,
                "total_x": totals[ROLE_ON_TIME],
                "total_u": totals[ROLE_STALE],
                "total_v": totals[ROLE_FRESH],
                "bytes_up": bytes_up,
                "bytes_down": self._bytes_down.get(server_round, 0),
                "aggregate_ms": 1e3 * (time.perf_counter() - start),
                "delta_formed": float(delta_formed),
                "values_up": values_up,
                "sim_seconds": round_seconds(timed, 0, math.inf, self.uplink_mbps),
            }
        )
        log(INFO, "round %d: aggregated x=%d u=%d v=%d, rejected %d",
            server_round, metrics["set_x"], metrics["set_u"], metrics["set_v"],
            len(rejected))  # fmt: skip
        arrays = ArrayRecord({k: Array(v) for k, v in self.global_sums.to_arrays().items()})
        return arrays, MetricRecord(metrics)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global sums to sampled nodes for federated evaluation."""
        if self.fraction_evaluate == 0.0:
            return []
        sums = self.sums_from_arrays(arrays)
        node_ids = self._sample(grid, self.fraction_evaluate, self.min_evaluate_nodes, "evaluate")
        content = self.instruction(server_round, sums, config)
        return [
            Message(content, dst_node_id=n, message_type=MessageType.EVALUATE) for n in node_ids
        ]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Average the clients' plaintext metrics weighted by their number of tasks."""
        weighted: dict[str, float] = {}
        tasks = 0.0
        rejected = 0
        for msg in replies:
            node = msg.metadata.src_node_id
            try:
                if msg.has_error():
                    raise PayloadError(f"error reply: {msg.error.reason}")
                metrics = _scalar_metrics(msg.content)
                n = metrics.pop(EVAL_WEIGHT, None)
                if n is None or n <= 0:
                    raise PayloadError(f"metric {EVAL_WEIGHT!r} must be > 0, got {n!r}")
            except PayloadError as err:
                rejected += 1
                log(WARNING, "round %d: dropped the evaluation from node %d: %s",
                    server_round, node, err)  # fmt: skip
                continue
            tasks += n
            for key, value in metrics.items():
                weighted[key] = weighted.get(key, 0.0) + n * value
        if tasks == 0:
            log(WARNING, "round %d: no usable evaluation replies", server_round)
            return None
        out = {key: value / tasks for key, value in weighted.items()}
        out.update({EVAL_WEIGHT: tasks, "rejected": rejected})
        return MetricRecord(out)

    # ---- helpers ------------------------------------------------------------------------
    def instruction(self, server_round: int, sums: GlobalSums, config: ConfigRecord) -> RecordDict:
        """The content of a train/evaluate instruction: run config, round settings, sums."""
        settings = RoundSettings(
            server_round=server_round,
            model_length=self.model_length,
            num_classes=self.num_classes,
            knowledge_rows=self.knowledge_rows,
            knowledge=server_round > 1,  # round 1 holds G_0 only; later rounds the clients' G
            delta=_at(self.delta, server_round),
            temperature=_at(self.temperature, server_round),
            deadline_s=_at(self.deadline_s, server_round),
            correction=self.correction,
        )
        return to_recorddict(
            {CONFIG: {**dict(config), **settings.to_config()}, **sums.to_records()}
        )

    def sums_from_arrays(self, arrays: ArrayRecord) -> GlobalSums:
        """The global state from ``start``'s ArrayRecord: sums, or plaintext W_0, G_0 (round 1)."""
        if GlobalSums.in_arrays(arrays.keys()):
            sums = GlobalSums.from_arrays({k: a.numpy() for k, a in arrays.items()})
        elif INIT_MODEL in arrays and INIT_SOFT_LABELS in arrays:
            model, soft_labels = arrays[INIT_MODEL].numpy(), arrays[INIT_SOFT_LABELS].numpy()
            shape = (self.knowledge_rows, self.num_classes)
            if model.size != self.model_length or soft_labels.shape != shape:
                raise ValueError(
                    f"initial arrays have a model of {model.size} values and soft labels of "
                    f"shape {soft_labels.shape}; the strategy expects {self.model_length} and "
                    f"{shape}"
                )
            # The initial model is public; encrypting it with the public key keeps one read
            # path on the clients (every round: decrypt, divide by the total).
            sums = initial_sums(self.backend, model, soft_labels, self.max_examples)
        else:
            raise ValueError(
                f"the ArrayRecord holds {sorted(arrays.keys())}; give the initial arrays as "
                f"common.protocol.initial_arrays(model, soft_labels) "
                f"(keys {INIT_MODEL!r}, {INIT_SOFT_LABELS!r})"
            )
        self.global_sums = sums
        return sums

    def expect_replies(self, server_round: int, node_ids: Iterable[int]) -> None:
        """Only ``node_ids`` (the nodes sampled for the round) may reply to ``server_round``."""
        self._sampled[server_round] = set(node_ids)

    def _accept(
        self, server_round: int, msg: Message, seen: set[int]
    ) -> tuple[TrainUpload, LoadedVector, dict[str, float]]:
        """Parse and check one train reply against what this round allows; deserialise its
        ciphertexts. Raises :class:`PayloadError` naming the first problem."""
        node = msg.metadata.src_node_id
        sampled = self._sampled.get(server_round)
        if sampled is not None and node not in sampled:
            raise PayloadError("the node was not sampled for this round")
        if node in seen:
            raise PayloadError("a second reply from the node in this round")
        seen.add(node)
        upload = TrainUpload.from_records(config_records(msg.content))
        n = upload.num_examples
        if n != int(n) or not 1 <= n <= self.max_examples:
            raise PayloadError(
                f"num-examples n_i={n!r} must be a whole number in [1, {self.max_examples}] "
                f"(the clients' buffer size)"
            )
        if upload.role == ROLE_STALE:
            if not 1 <= upload.logits_round < server_round:
                raise PayloadError(
                    f"stale logits (role 'u') from round {upload.logits_round}; a round before "
                    f"{server_round} is needed"
                )
        elif upload.logits_round != server_round:
            raise PayloadError(
                f"role {upload.role!r} uploads this round's logits, but logits-round is "
                f"{upload.logits_round}, not {server_round}"
            )
        if upload.payload.encryption != self.backend.upload_encryption:
            raise PayloadError(
                f"encrypted {upload.payload.encryption!r}; uploads are "
                f"{self.backend.upload_encryption!r}"
            )
        limit = self.backend.max_chunk_bytes
        for k, chunk in enumerate(upload.payload.chunks):
            if len(chunk) > limit:
                raise PayloadError(f"chunk {k} has {len(chunk)} bytes, above the {limit} allowed")
        loaded = self.backend.load(upload.payload, self._length(upload.role))
        return upload, loaded, _scalar_metrics(msg.content)

    def _length(self, role: str) -> int:
        return expected_length(role, self.model_length, self.num_classes, self.knowledge_rows)

    def _sample(self, grid: Grid, fraction: float, min_nodes: int, what: str) -> list[int]:
        available = len(list(grid.get_node_ids()))
        sample_size = max(int(available * fraction), min_nodes)
        node_ids, all_nodes = sample_nodes(grid, self.min_available_nodes, sample_size)
        log(INFO, "configure_%s: sampled %d nodes (out of %d)", what, len(node_ids),
            len(all_nodes))  # fmt: skip
        return node_ids

"""The device wrapper: one client's profile, keys, teacher and local state across rounds.

It turns Flower message content into calls of :mod:`common.fed` and back. The ClientApp keeps
one ``Device`` per (run directory, partition) in memory; the local state also lives on disk
(``<state_dir>/client-<id>-r<round>.npz``) so a resumed run finds what each client had.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from common.crypto import SECRET_CONTEXT_FILE, PayloadError, make_backend
from common.crypto.params import HEConfig
from common.fed import (
    LocalState,
    distill_global,
    evaluate_student,
    federation_profile,
    initial_weights,
    knowledge_shape,
    load_teacher,
    train_round,
)
from common.fed.prepare import TEACHER_FILE
from common.fed.settings import PLAINTEXT_STRATEGIES, FederatedRunConfig
from common.mec.scenario import ScenarioConfig
from common.models.nets import ModelConfig
from common.protocol import (
    ARRAYS,
    COMPUTE_KEY,
    CONFIG,
    DEADLINE_KEY,
    DELTA_KEY,
    EDGE_GROUP_KEY,
    EVAL_WEIGHT,
    LATE_KEY,
    METRICS,
    NUM_EXAMPLES_KEY,
    SERVER_ROUND_KEY,
    STUDENT_KEY,
    TEMPERATURE_KEY,
    GlobalSums,
    RoundSettings,
    build_upload,
    read_global,
)

KEEP_STATES = 2


@functools.lru_cache(maxsize=4)
def _backend(he: HEConfig, path: str):
    """One secret context per process, shared by all the devices it hosts (a CKKS context
    holds MBs of keys; a Ray actor may host hundreds of virtual clients)."""
    return make_backend(he, Path(path))


@functools.lru_cache(maxsize=4)
def _teacher(path: str, model: ModelConfig, scenario: ScenarioConfig):
    """The teacher, loaded once per process; it is only used for inference."""
    return load_teacher(path, model, scenario)


def _configs(content: RecordDict) -> dict[str, dict[str, Any]]:
    return {name: dict(record) for name, record in content.config_records.items()}


def _metrics(values: dict[str, float]) -> MetricRecord:
    return MetricRecord({k: float(v) for k, v in values.items() if np.isfinite(v)})


class Device:
    """A client of the federation (a group of MEC devices with one profile)."""

    def __init__(
        self,
        cfg: FederatedRunConfig,
        partition_id: int,
        state_dir: Path,
        secret_context: Path | None = None,
        teacher_path: Path | None = None,
    ) -> None:
        """``secret_context`` and ``teacher_path`` default to the files in the clients' directory
        (simulation); a deployed SuperNode names its provisioned files in its node config."""
        self.cfg = cfg
        self.profile = federation_profile(cfg, partition_id)
        self.partition_id = partition_id
        self.state_dir = state_dir
        clients = Path(cfg.client_dir)
        self.backend = None
        if cfg.strategy.name not in PLAINTEXT_STRATEGIES:
            self.backend = _backend(cfg.he, str(secret_context or clients / SECRET_CONTEXT_FILE))
        with torch.random.fork_rng(devices=[]):  # sizing the student leaves the RNG as it was
            self._model_length = initial_weights(cfg).size
        self.teacher = None
        if cfg.strategy.local.logits_source == "teacher" and cfg.strategy.name == "keco":
            path = str(teacher_path or clients / TEACHER_FILE)
            self.teacher = _teacher(path, cfg.teacher, cfg.scenario)

    # ---- local state, one file per finished round --------------------------------------
    def _state_path(self, server_round: int) -> Path:
        return self.state_dir / f"client-{self.partition_id}-r{server_round}.npz"

    def _saved_rounds(self) -> list[int]:
        """Rounds with a saved state (temporary files of an interrupted save are ignored)."""
        pattern = re.compile(rf"client-{self.partition_id}-r(\d+)\.npz")
        if not self.state_dir.exists():
            return []
        found = (pattern.fullmatch(p.name) for p in self.state_dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _load_state(self, server_round: int) -> LocalState:
        """The state after the latest round before ``server_round``; later files (an older run
        in the same directory, or a round the server never checkpointed) are not used."""
        before = [r for r in self._saved_rounds() if r < server_round]
        if not before:
            return LocalState.empty(self.cfg.scenario)
        return LocalState.load(self._state_path(before[-1]), self.cfg.scenario)

    def _save_state(self, state: LocalState, server_round: int) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state.save(self._state_path(server_round))
        for r in self._saved_rounds():
            if r > server_round or r <= server_round - KEEP_STATES:
                self._state_path(r).unlink(missing_ok=True)

    # ---- KECO ------------------------------------------------------------------------------
    def _global(
        self, content: RecordDict, evaluate: bool = False
    ) -> tuple[RoundSettings, np.ndarray, np.ndarray]:
        """Decrypt the global model and knowledge of the instruction (and, with
        ``strategy.global_kd_steps`` done on the clients, distil the model as KECO's steps 5–6
        say, for the round whose aggregation made it: the previous one for a train instruction,
        this one for an evaluate instruction). Raises :class:`PayloadError` (or
        :class:`CryptoError`) on anything malformed, before the client's state is touched."""
        configs = _configs(content)
        if CONFIG not in configs:
            raise PayloadError(f"the instruction lacks its {CONFIG!r} record")
        settings = RoundSettings.from_config(configs[CONFIG])
        self._check_shapes(settings)
        w, g = read_global(
            self.backend, GlobalSums.from_records(configs), settings.model_length,
            settings.num_classes, settings.knowledge_rows,
        )  # fmt: skip
        aggregated_round = settings.server_round - (0 if evaluate else 1)
        st = self.cfg.strategy
        if st.global_kd_steps and not st.server_distill and aggregated_round >= 1 and w.size:
            w = distill_global(self.cfg, w, g, aggregated_round)
        return settings, w, g

    def _check_shapes(self, settings: RoundSettings) -> None:
        """The instruction must be for this client's model and knowledge: a server of another
        run (or a corrupted instruction) is refused before anything is decrypted."""
        rows, classes = knowledge_shape(self.cfg)
        model = 0 if self.cfg.strategy.name == "feddistill" else self._model_length
        got = (settings.model_length, settings.num_classes, settings.knowledge_rows)
        if got != (model, classes, rows):
            raise PayloadError(
                f"the instruction is for a model of {got[0]} parameters and knowledge of "
                f"{got[2]}x{got[1]}, but this client's student has {model} and its knowledge is "
                f"{rows}x{classes}: an instruction of another run or config, refused"
            )

    def train(self, msg: Message) -> RecordDict:
        if self.cfg.strategy.name in PLAINTEXT_STRATEGIES:
            return self._train_plain(msg)
        s, w, g = self._global(msg.content)
        state = self._load_state(s.server_round)
        distill_only = self.cfg.strategy.name == "feddistill"
        if distill_only:  # no global model: the client continues its own
            w = state.model if state.model is not None else initial_weights(self.cfg)
        result = train_round(
            self.cfg, self.profile, state, w, g if s.knowledge else None,
            server_round=s.server_round, delta=s.delta, temperature=s.temperature,
            deadline_s=s.deadline_s, teacher=self.teacher,
        )  # fmt: skip
        model = result.model
        if distill_only and model is not None:
            state.model, model = model, np.zeros(0)  # the weights stay on the device
        self._save_state(state, s.server_round)
        upload = build_upload(
            self.backend, result.role, result.num_examples, result.soft_labels,
            model, result.logits_round,
        )  # fmt: skip
        records: dict[str, Any] = {n: ConfigRecord(r) for n, r in upload.to_records().items()}
        records[METRICS] = _metrics(result.metrics)
        return RecordDict(records)

    def evaluate(self, msg: Message) -> RecordDict:
        if self.cfg.strategy.name in PLAINTEXT_STRATEGIES:
            w = msg.content.array_records[ARRAYS][STUDENT_KEY].numpy().astype(np.float64)
            server_round = int(msg.content.config_records[CONFIG].get(SERVER_ROUND_KEY, 0))
        else:
            s, w, _ = self._global(msg.content, evaluate=True)
            server_round = s.server_round
        state = self._load_state(server_round + 1)  # what this client has after the round
        if self.cfg.strategy.name == "feddistill":  # each client runs its own model
            w = state.model if state.model is not None else initial_weights(self.cfg)
        m = evaluate_student(self.cfg, self.profile, w, server_round, state)
        # every reply carries the same keys (FedAvg refuses to aggregate otherwise): drop the
        # two that can be undefined on a small episode (no completed task) or are wall-clock
        m = {k: v for k, v in m.items() if k not in ("delay_completed", "slots_per_s")}
        m[EVAL_WEIGHT] = m["tasks"]
        m[NUM_EXAMPLES_KEY] = m["tasks"]  # FedAvg weighs evaluation metrics by this key
        return RecordDict({METRICS: _metrics(m)})

    # ---- FedAvg / FedMeta2Ag: plaintext student weights, hard labels only ----------------
    def _train_plain(self, msg: Message) -> RecordDict:
        config = dict(msg.content.config_records[CONFIG])
        server_round = int(config.get(SERVER_ROUND_KEY, 0))
        w = msg.content.array_records[ARRAYS][STUDENT_KEY].numpy().astype(np.float64)
        state = self._load_state(server_round)
        deadline = float(config.get(DEADLINE_KEY, float("inf")))
        wait = self.cfg.strategy.late == "wait"  # a late client trains anyway and is waited for
        result = train_round(
            self.cfg, self.profile, state, w, None,
            server_round=server_round, delta=float(config.get(DELTA_KEY, 1.0)),
            temperature=float(config.get(TEMPERATURE_KEY, 1.0)),
            deadline_s=float("inf") if wait else deadline, teacher=None,
        )  # fmt: skip
        self._save_state(state, server_round)
        metrics = {**result.metrics, NUM_EXAMPLES_KEY: result.num_examples}
        metrics[LATE_KEY] = float(metrics[COMPUTE_KEY] > deadline)
        if self.cfg.strategy.name == "fedmeta2ag":
            metrics[EDGE_GROUP_KEY] = self.partition_id % self.cfg.strategy.edge_servers
        if result.model is None:  # late and dropped: no update, the round goes on without it
            return RecordDict({METRICS: _metrics(metrics)})
        arrays = ArrayRecord({STUDENT_KEY: Array(result.model.astype(np.float32))})
        return RecordDict({ARRAYS: arrays, METRICS: _metrics(metrics)})

"""Settings of a federated run (``conf/federation``, ``conf/strategy``) and their one builder,
``federated_from_dict``: what the server and every client agree on; ``register_schemas`` makes
every settings dataclass the home of its defaults in ``conf/``."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import (
    ConfigError,
    as_floats,
    build,
    check_positive,
    check_positive_int,
    check_unit,
    compose,
    defaults_of,
    finite,
    register_schema,
    to_dict,
    typed,
)
from common.crypto.params import HEConfig, he_from_dict, register_he_schema
from common.distill import ScheduleConfig, TargetConfig, schedule_from_dict, targets_from_dict
from common.mec.policies import HEURISTIC_METHODS, POLICIES
from common.mec.scenario import ScenarioConfig, register_scenario_schema, scenario_from_dict
from common.models.nets import ModelConfig, model_from_dict, register_model_schemas
from common.training.imitation import ImitationConfig, imitation_from_dict

# --------------------------------------------------------------------------------------------
# Federation (conf/federation/*.yaml, conf/strategy/*.yaml, experiment=federation)
# --------------------------------------------------------------------------------------------
STRATEGIES = ("keco", "fedavg", "feddistill", "fedmeta2ag")
"""``keco`` and ``feddistill`` go through the encrypted KECO protocol; the others send the
student's weights in plaintext through Flower's FedAvg message format."""
PLAINTEXT_STRATEGIES = ("fedavg", "fedmeta2ag")
LOGITS_SOURCES = ("teacher", "student")


@dataclass(frozen=True)
class FederationConfig:
    """Who takes part and how the simulation is run (``conf/federation/*.yaml``)."""

    num_clients: int = 10
    """Virtual clients (Flower SuperNodes); each is one group of devices with its own profile."""
    rounds: int = 10
    """Federated rounds."""
    fraction_train: float = 1.0
    """Fraction of the connected clients sampled for training each round."""
    fraction_evaluate: float = 1.0
    """Fraction sampled for federated evaluation each round."""
    min_replies: int = 1
    """A round fails (clear error) when fewer usable train replies remain after validation."""
    heterogeneity: float = 0.5
    """0 = IID clients; 1 = strongly non-IID (arrival rate, task sizes, power modes, channel
    quality, computation density and device speed all differ per client)."""
    client_cpus: float = 1.0
    """Ray CPUs per virtual client (2 cores: 1.0 runs two clients at once)."""
    ray_address: str | None = None
    """Attach to an existing Ray cluster (passed to ``ray.init``, e.g. ``"auto"`` or
    ``"ray://head:10001"``); ``None`` starts a local one."""
    timeout_s: float = 3600  # an int, as conf/ has always written it (the builder makes a float)
    """Seconds the server waits for the replies of one round."""
    min_available_nodes: int | None = None
    """Connected clients the server waits for before a round (``None``: all ``num_clients``);
    a deployment sets it below ``num_clients`` so that the rounds go on when a device drops
    out."""
    slow_fraction: float = 0.0
    """Share of the clients that are slow devices (stragglers): their training speed is
    multiplied by ``slow_factor``. Which clients are slow is a seeded draw of exactly
    ``round(slow_fraction × num_clients)`` partitions."""
    slow_factor: float = 0.25
    """Largest speed multiplier of a slow client's compute-time model (each slow client draws
    one log-uniformly in ``[slow_factor / slow_spread, slow_factor]``)."""
    slow_spread: float = 100.0
    """Ratio of the fastest to the slowest slow device (>= 1)."""
    uplink_mbps: float = 20.0
    """Uplink rate of the clients' updates, Mbit/s: a round's simulated time is its slowest
    used client's compute time plus the time to upload its reply."""

    @property
    def available(self) -> int:
        """Clients that must be connected before a round."""
        return self.num_clients if self.min_available_nodes is None else self.min_available_nodes

    def validate(self) -> FederationConfig:
        check_positive_int(self.num_clients, "federation.num_clients")
        check_positive_int(self.rounds, "federation.rounds")
        check_positive_int(self.min_replies, "federation.min_replies")
        for name in ("fraction_train", "fraction_evaluate"):
            v = getattr(self, name)
            if not finite(v) or not 0.0 < v <= 1.0:
                raise ConfigError(f"federation.{name} must be in (0, 1], got {v!r}")
        check_unit(self.heterogeneity, "federation.heterogeneity")
        check_unit(self.slow_fraction, "federation.slow_fraction")
        check_positive(self.slow_factor, "federation.slow_factor")
        if not finite(self.slow_spread) or self.slow_spread < 1:
            raise ConfigError(f"federation.slow_spread must be >= 1, got {self.slow_spread!r}")
        check_positive(self.uplink_mbps, "federation.uplink_mbps")
        check_positive(self.client_cpus, "federation.client_cpus")
        check_positive(self.timeout_s, "federation.timeout_s")
        if self.min_available_nodes is not None and (
            not isinstance(self.min_available_nodes, int)
            or not 1 <= self.min_available_nodes <= self.num_clients
        ):
            raise ConfigError(
                f"federation.min_available_nodes must be an integer in [1, num_clients = "
                f"{self.num_clients}] or null, got {self.min_available_nodes!r}"
            )
        sampled = max(1, math.ceil(self.available * self.fraction_train))
        if self.min_replies > sampled:
            raise ConfigError(
                f"federation.min_replies ({self.min_replies}) exceeds the clients sampled per "
                f"round ({sampled} = num_clients × fraction_train); lower it or sample more"
            )
        return self


@dataclass(frozen=True)
class LocalConfig:
    """What each client does in a round (``strategy.local``)."""

    episodes: int = 2
    """Fresh episodes simulated per round on the client's own device profile."""
    buffer_size: int = 4000
    """Bounded local buffer of labelled tasks (incremental learning; oldest dropped first)."""
    epochs: int = 20
    """Passes over the buffer per round."""
    batch_size: int = 256
    """Samples per optimiser step."""
    lr: float = 3e-3
    """Adam learning rate (KECO uses 0.001 over far more steps)."""
    explore: float = 0.1
    """Probability that the behaviour policy takes a random action while collecting data."""
    expert_mix: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(kind="linear", start=0.9, floor=0.1, length=10)
    )
    """Probability β_t that the behaviour policy follows the oracle in round t (DAgger's β),
    a schedule over rounds: early rounds follow the oracle (good states), later ones the
    student (the states it visits itself). ``conf/strategy/keco.yaml`` spans the run's rounds."""
    train_loads: tuple[float, ...] | None = None
    """Load multipliers cycled over the episodes a client simulates (each scales its devices'
    arrival probabilities), so a policy learns the loads it will meet; ``None``: the
    scenario's own load only."""
    targets: TargetConfig = field(default_factory=TargetConfig)
    """Training targets from the oracle's costs."""
    logits_source: str = "teacher"
    """Network whose per-class mean logits form the client's soft labels: ``teacher`` (KECO's
    HE section) or ``student``."""
    eval_episodes: int = 2
    """Fresh episodes per client in federated evaluation."""
    speed_gflops: float = 2.0
    """Median device training speed of the compute-time model, GFLOP/s (clients spread around
    it with the heterogeneity)."""

    def validate(self) -> LocalConfig:
        for name in ("episodes", "buffer_size", "epochs", "batch_size", "eval_episodes"):
            check_positive_int(getattr(self, name), f"strategy.local.{name}")
        check_positive(self.lr, "strategy.local.lr")
        check_positive(self.speed_gflops, "strategy.local.speed_gflops")
        check_unit(self.explore, "strategy.local.explore")
        self.expert_mix.validate("strategy.local.expert_mix")
        if self.explore + max(self.expert_mix.start, self.expert_mix.floor) > 1.0:
            raise ConfigError("strategy.local.explore + strategy.local.expert_mix must be <= 1")
        if self.train_loads is not None:
            loads = self.train_loads
            if not loads or any(not finite(v) or v <= 0 for v in loads):
                raise ConfigError(
                    f"strategy.local.train_loads must be null or a non-empty list of positive "
                    f"load multipliers, got {loads!r}"
                )
        self.targets.validate("strategy.local.targets")
        if self.logits_source not in LOGITS_SOURCES:
            raise ConfigError(
                f"strategy.local.logits_source must be one of {list(LOGITS_SOURCES)}, "
                f"got {self.logits_source!r}"
            )
        return self


def local_from_dict(raw: Any) -> LocalConfig:
    """Build (not yet validate) a :class:`LocalConfig` from ``strategy.local``."""
    d = to_dict(raw)
    where = "strategy.local"
    mix = d.pop("expert_mix", None)
    if isinstance(mix, (int, float)) and not isinstance(mix, bool):  # a constant β
        mix = {"kind": "constant", "start": mix, "floor": mix, "length": 1}
    subs: dict[str, Any] = {"targets": targets_from_dict(d.pop("targets", {}), f"{where}.targets")}
    if mix is not None:
        subs["expert_mix"] = schedule_from_dict(mix, f"{where}.expert_mix")
    loads = d.get("train_loads")
    if loads is not None:
        d["train_loads"] = as_floats(loads, f"{where}.train_loads")
    return dataclasses.replace(build(LocalConfig, d, where), **subs)


@dataclass(frozen=True)
class MetaConfig:
    """FedMeta2Ag's local MAML (``strategy.meta``; first-order MAML on the client's buffer)."""

    tasks: int = 20
    """Meta-tasks per round: each draws a support and a query batch from the buffer."""
    inner_steps: int = 2
    """Gradient steps on the support batch (the paper: one or two)."""
    inner_lr: float = 0.01
    """Inner-loop (adaptation) learning rate α."""
    outer_lr: float = 0.003
    """Outer-loop (meta) learning rate β."""
    adapt_steps: int = 10
    """Fine-tuning steps on the client's own buffer before it evaluates (meta-test)."""
    adapt_lr: float = 0.003
    """Learning rate of that fine-tuning."""

    def validate(self) -> MetaConfig:
        for name in ("tasks", "inner_steps"):
            check_positive_int(getattr(self, name), f"strategy.meta.{name}")
        if not isinstance(self.adapt_steps, int) or self.adapt_steps < 0:
            raise ConfigError("strategy.meta.adapt_steps must be an integer >= 0")
        for name in ("inner_lr", "outer_lr", "adapt_lr"):
            check_positive(getattr(self, name), f"strategy.meta.{name}")
        return self


FEDMETA2AG_FIELDS = ("edge_servers", "meta")
"""The fields only ``fedmeta2ag`` reads: only ``conf/strategy/fedmeta2ag.yaml`` carries them."""
KNOWLEDGE_KINDS = ("proxy", "class_table")
LATE_POLICIES = ("wait", "drop")


@dataclass(frozen=True)
class ProxyConfig:
    """The shared proxy set of ``knowledge: proxy`` (``strategy.proxy``; see
    :mod:`common.fed.proxy`)."""

    size: int = 512
    """Proxy states; a client uploads ``size × (M + 1)`` logits per round."""
    episodes: int | None = None
    """Public episodes the states are drawn from (at the run's training loads); ``None``: as
    many as it takes to hold twice ``size`` tasks."""
    policy: str = "greedy"
    """Public heuristic that runs those episodes."""

    def validate(self) -> ProxyConfig:
        check_positive_int(self.size, "strategy.proxy.size")
        if self.episodes is not None:
            check_positive_int(self.episodes, "strategy.proxy.episodes")
        if self.policy not in HEURISTIC_METHODS:
            raise ConfigError(
                f"strategy.proxy.policy must be one of {list(HEURISTIC_METHODS)}, "
                f"got {self.policy!r}"
            )
        return self


@dataclass(frozen=True)
class StrategyConfig:
    """The server strategy and the round schedule (``conf/strategy/*.yaml``)."""

    name: str = "keco"
    """``keco`` (encrypted weights + soft labels, Δ from late clients), ``feddistill`` (the
    same protocol with soft labels only: every client keeps its own model), ``fedavg``
    (Flower's FedAvg of the student, hard labels only, plaintext) or ``fedmeta2ag`` (local
    MAML, edge-level then cloud-level averaging, plaintext)."""
    correction: bool = True
    """KECO's soft-label correction Δ from late clients (off for the ablation)."""
    delta: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(length=10))
    """δ_t over rounds: weight of the hard-label loss (KECO: 3:1 early, 1:3 late)."""
    temperature: float = 2.0
    """Distillation temperature T."""
    knowledge: str = "proxy"
    """What the soft labels are: ``proxy`` (every client's logits on the shared proxy set,
    per-sample knowledge) or ``class_table`` (per-class mean logits, indexed by the label:
    class-dependent label smoothing, kept as the ablation)."""
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    """The shared proxy set (``knowledge: proxy``)."""
    soft_cap: float = 1.0
    """Largest weight of the soft term relative to the hard one: the loss uses
    ``min((1 − δ)·T², soft_cap·δ)`` for the soft term."""
    global_kd_steps: int = 0
    """KECO's steps 5–6 ("Implementation of KECO"): after averaging, distil the global model
    towards the global soft labels on the proxy set for this many minibatches before it is
    used (0: off). Under CKKS each client does it right after decrypting (every client gets
    the same model: the step is seeded by the round alone)."""
    server_distill: bool = False
    """With ``he=off``, the server does the ``global_kd_steps`` itself after aggregating and
    sends the distilled model (the same code and result; clients then skip it)."""
    deadline_s: float | None = None
    """Budget of simulated local compute per round, seconds; slower clients are late (set y).
    ``None``: no deadline. The same compute-time model and deadline apply to every strategy."""
    late: str = "wait"
    """What ``fedavg`` and ``fedmeta2ag`` do with a client over the deadline: ``wait`` for it
    (the round lasts as long as the slowest sampled client) or ``drop`` its update (the round
    goes on with the on-time clients). KECO and FedDistill use late clients' logits instead."""
    local: LocalConfig = field(default_factory=LocalConfig)
    edge_servers: int = 4
    """``fedmeta2ag``: MEC-L edge servers; client ``i`` belongs to server ``i mod edge_servers``."""
    meta: MetaConfig = field(default_factory=MetaConfig)
    """``fedmeta2ag``: the local MAML."""

    def validate(self) -> StrategyConfig:
        if self.name not in STRATEGIES:
            raise ConfigError(f"strategy.name must be one of {list(STRATEGIES)}, got {self.name!r}")
        check_positive_int(self.edge_servers, "strategy.edge_servers")
        self.meta.validate()
        if not isinstance(self.correction, bool):
            raise ConfigError(f"strategy.correction must be true or false, got {self.correction!r}")
        self.delta.validate("strategy.delta")
        if self.name in PLAINTEXT_STRATEGIES and (
            self.delta.kind != "constant" or self.delta.start != 1.0
        ):
            raise ConfigError(
                f"strategy={self.name} trains on hard labels only: strategy.delta must stay "
                "{kind: constant, start: 1.0}"
            )
        check_positive(self.temperature, "strategy.temperature")
        if self.knowledge not in KNOWLEDGE_KINDS:
            raise ConfigError(
                f"strategy.knowledge must be one of {list(KNOWLEDGE_KINDS)}, got {self.knowledge!r}"
            )
        self.proxy.validate()
        if not finite(self.soft_cap) or self.soft_cap < 0:
            raise ConfigError(f"strategy.soft_cap must be a number >= 0, got {self.soft_cap!r}")
        if not isinstance(self.global_kd_steps, int) or self.global_kd_steps < 0:
            raise ConfigError(
                f"strategy.global_kd_steps must be an integer >= 0, got {self.global_kd_steps!r}"
            )
        if self.global_kd_steps and self.knowledge != "proxy":
            raise ConfigError(
                "strategy.global_kd_steps distils on the proxy set: it needs "
                "strategy.knowledge=proxy"
            )
        if self.deadline_s is not None:
            check_positive(self.deadline_s, "strategy.deadline_s")
        if self.late not in LATE_POLICIES:
            raise ConfigError(
                f"strategy.late must be one of {list(LATE_POLICIES)}, got {self.late!r}"
            )
        self.local.validate()
        return self


@dataclass(frozen=True)
class FederatedRunConfig:
    """Everything a federated run needs, on the server and on every client."""

    scenario: ScenarioConfig
    student: ModelConfig
    teacher: ModelConfig
    teacher_training: ImitationConfig
    he: HEConfig
    federation: FederationConfig
    strategy: StrategyConfig
    seed: int = 0
    """Seeds everything: initial model, client sampling, client data and training."""
    run_dir: str = "."
    """The server's directory: ``public.ctx``, checkpoints and results (never a secret key)."""
    client_dir: str = ""
    """The clients' (and key owner's) side of a simulation or local ``flwr run``: ``secret.ctx``,
    the teacher and the clients' local states. Default ``<run_dir>-clients``, beside the run
    directory and never inside it; a deployed SuperNode names its own files instead."""
    final_eval_episodes: int = 20
    """Held-out episodes of the final comparison (run by the key owner after the rounds)."""
    resume: bool = False
    """Continue from ``run_dir/checkpoint`` when it exists."""
    eval_seed: int = 50000
    """Seed of the held-out episodes of the final comparison."""
    heuristics: tuple[str, ...] = ("all_local", "all_offload", "random", "greedy", "load_balance")
    """Policies the final student is compared with (the oracle always is)."""

    @property
    def states_dir(self) -> Path:
        """Where simulated clients keep their local state between rounds."""
        return Path(self.client_dir) / "states"

    def at(self, run_dir: str | Path, client_dir: str | Path | None = None) -> FederatedRunConfig:
        """This config with another run directory (and its clients' directory, by default
        ``<run_dir>-clients``)."""
        clients = default_client_dir(run_dir) if client_dir is None else str(client_dir)
        return dataclasses.replace(self, run_dir=str(run_dir), client_dir=clients).validate()

    def validate(self) -> FederatedRunConfig:
        if not self.client_dir:
            raise ConfigError("client_dir is empty: build the config with federated_from_dict")
        server, clients = Path(self.run_dir).resolve(), Path(self.client_dir).resolve()
        if clients == server or server in clients.parents:
            raise ConfigError(
                f"client_dir={self.client_dir!r} is the run directory or inside it; the server's "
                f"run directory must never hold the clients' secret key: put it beside it"
            )
        if self.strategy.name not in PLAINTEXT_STRATEGIES:  # a sum holds at most every client
            self.he.check_run(self.federation.num_clients, self.strategy.local.buffer_size)
        if self.strategy.server_distill and (self.he.enabled or not self.strategy.global_kd_steps):
            raise ConfigError(
                "strategy.server_distill needs he=off (a CKKS server cannot see the model) and "
                "strategy.global_kd_steps > 0"
            )
        if self.strategy.name in PLAINTEXT_STRATEGIES and self.he.enabled:
            raise ConfigError(
                f"strategy={self.strategy.name} sends plaintext weights through Flower's "
                "message format; use he=off with it (keco and feddistill are the encrypted ones)"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        check_positive_int(self.final_eval_episodes, "experiment.final_eval_episodes")
        st, sc = self.strategy, self.scenario
        if st.knowledge == "proxy" and st.proxy.episodes is not None:
            loads = st.local.train_loads or (1.0,)
            p = sc.effective_arrival_prob
            expected = sum(
                sc.n_devices * sc.n_slots * min(1.0, p * loads[i % len(loads)])
                for i in range(st.proxy.episodes)
            )
            if expected < 2 * st.proxy.size:
                raise ConfigError(
                    f"strategy.proxy.size={st.proxy.size} needs about twice as many tasks in the "
                    f"proxy episodes, but strategy.proxy.episodes={st.proxy.episodes} hold about "
                    f"{expected:.0f}: raise strategy.proxy.episodes or lower strategy.proxy.size"
                )
        unknown = [h for h in self.heuristics if h not in POLICIES]
        if unknown:
            raise ConfigError(
                f"experiment.heuristics: unknown policies {unknown}; valid are {sorted(POLICIES)}"
            )
        return self


def default_client_dir(run_dir: str | Path) -> str:
    """``<run_dir>-clients``: the clients' directory beside the server's run directory."""
    path = Path(run_dir).resolve()
    return str(path.with_name(path.name + "-clients"))


def federated_from_dict(
    raw: Any, run_dir: str | Path | None = None, client_dir: str | Path | None = None
) -> FederatedRunConfig:
    """Build and validate a :class:`FederatedRunConfig` from the composed Hydra config.

    ``client_dir`` defaults to the config's ``client_dir`` or else ``<run_dir>-clients``."""
    d = to_dict(raw)
    exp = to_dict(d.get("experiment"))
    strategy = to_dict(d.get("strategy"))
    delta = schedule_from_dict(strategy.pop("delta", {}), "strategy.delta")
    local = local_from_dict(strategy.pop("local", {}))
    meta = build(MetaConfig, to_dict(strategy.pop("meta", {})), "strategy.meta")
    proxy = build(ProxyConfig, to_dict(strategy.pop("proxy", {})), "strategy.proxy")
    strat = dataclasses.replace(
        build(StrategyConfig, strategy, "strategy"), delta=delta, local=local, meta=meta,
        proxy=proxy,
    )  # fmt: skip
    hints = typing.get_type_hints(FederatedRunConfig)
    run_dir = run_dir if run_dir is not None else d.get("run_dir", ".")
    cfg = FederatedRunConfig(
        scenario=scenario_from_dict(d.get("scenario")),
        student=model_from_dict(d.get("student")),
        teacher=model_from_dict(d.get("model")),
        teacher_training=imitation_from_dict(exp.get("teacher_training", {}), "teacher_training"),
        he=he_from_dict(d.get("he")),
        federation=build(FederationConfig, to_dict(d.get("federation")), "federation").validate(),
        strategy=strat.validate(),
        seed=typed(d.get("seed", 0), int, "seed"),
        run_dir=str(run_dir),
        client_dir=str(client_dir or d.get("client_dir") or default_client_dir(run_dir)),
        **{
            name: typed(exp[name], hints[name], f"experiment.{name}")
            for name in ("final_eval_episodes", "resume", "eval_seed", "heuristics")
            if name in exp
        },
    )
    return cfg.validate()


def register_schemas() -> None:
    """Register every settings dataclass's defaults as a Hydra config ``schema/<name>``, where
    the presets of ``conf/`` start (``- /schema/<name>@_here_``): call it before composing
    ``conf/`` (entry points before ``@hydra.main`` runs, other callers before
    :func:`common.config.compose`). Idempotent."""
    register_scenario_schema()
    register_he_schema()
    register_model_schemas()
    register_schema("federation", defaults_of(FederationConfig))
    shared = [f.name for f in dataclasses.fields(StrategyConfig) if f.name not in FEDMETA2AG_FIELDS]
    register_schema("strategy", defaults_of(StrategyConfig, shared))
    register_schema("strategy_fedmeta2ag", defaults_of(StrategyConfig, FEDMETA2AG_FIELDS))


def federated_from_run_config(run_config: Mapping[str, Any]) -> FederatedRunConfig:
    """The run config of ``flwr run .``: ``overrides`` (Hydra overrides, space separated),
    ``run-dir`` (the server's) and ``client-dir`` (the clients'; empty: ``<run-dir>-clients``)
    from ``[tool.flwr.app.config]`` or ``--run-config``."""
    import shlex

    overrides = shlex.split(str(run_config.get("overrides", "")))
    run_dir = str(run_config.get("run-dir", "outputs/flwr-run"))
    client_dir = str(run_config.get("client-dir", "")) or None
    register_schemas()
    raw = compose(["experiment=federation", *overrides])
    return federated_from_dict(raw, run_dir, client_dir)

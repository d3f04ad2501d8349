"""KECO on Flower's deployment engine, with real processes on loopback.

``python -m experiments.deploy clients=<n> rounds=<r> tls=<bool> auth=<bool>
kill_one_at_round=<k|null> restart_superlink_at_round=<k|null>`` (Hydra overrides of
``conf/deploy.yaml``):

1. Validate everything (the deploy settings and the app's config) before any process starts.
2. Provision one directory per party (``experiments.deploy_lib.cluster.Layout``): a CA and the
   SuperLink's certificate, a P-384 key pair per SuperNode, the CKKS keys and the teacher made
   by the key owner; the server gets ``public.ctx`` only, each SuperNode ``secret.ctx``.
3. Start ``flower-superlink`` (TLS, ``--enable-supernode-auth``, process isolation), a
   ``flower-superexec`` for the ServerApp, register each SuperNode's public key with
   ``flwr supernode register``, and start per device a ``flower-supernode`` (its
   ``--node-config`` names the partition, its state directory, secret context and teacher) and a
   ``flower-superexec`` for its ClientApp.
4. ``flwr run`` the app against that SuperLink, injecting the faults asked for: kill one
   SuperNode when a round starts and start it again once that round is over
   (``kill_one_at_round``, ``rejoin_after_kill``); SIGKILL the SuperLink while a round runs and
   start it again on its state database (``restart_superlink_at_round``); make one ClientApp
   raise in a round (``raise_in_client_at_round``); or crash the ServerApp after a round's
   checkpoint and run it again with ``experiment.resume=true`` (``crash_server_at_round``).
5. As the key owner, decrypt the final global student and compare it with the heuristics; write
   ``results.json`` and ``report.md``; stop every process it started (also on failure).

The last printed line is a JSON summary: rounds completed, clients per round, final QoE,
dropouts, and ``faults``: each fault injected, when, and whether the federation survived it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.config import ConfigError, compose
from common.fed.settings import FederatedRunConfig, federated_from_dict, register_schemas
from experiments.cli import hydra_app
from experiments.deploy_lib.cli import FlwrCli, write_run_config
from experiments.deploy_lib.cluster import Cluster, Layout, provision
from experiments.deploy_lib.pki import DEFAULT_SERVER_NAMES
from experiments.deploy_lib.procs import Processes, children, cmdline

log = logging.getLogger("keco.deploy")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_KEYS = frozenset(
    {
        "clients", "rounds", "tls", "auth", "kill_one_at_round", "rejoin_after_kill",
        "restart_superlink_at_round", "raise_in_client_at_round", "crash_server_at_round",
        "min_nodes", "start_timeout_s", "run_timeout_s", "app_overrides", "provision_only",
        "server_names",
    }
)  # fmt: skip
"""Top-level keys of ``conf/deploy.yaml`` that configure the deployment, not the app."""
RESERVED_APP_KEYS = {
    "federation.num_clients": "clients=<n>",
    "federation.min_available_nodes": "min_nodes=<m>",
    "federation.rounds": "rounds=<r>",
    "experiment.resume": "crash_server_at_round=<k> (the restart resumes by itself)",
}
CHECKPOINT_STATE = Path("checkpoint") / "state.json"
COMPOSE_SUPERLINK = "127.0.0.1:8000"
"""Where docker-compose.yml publishes the SuperLink (for ``provision_only``)."""
COMPOSE_RUN_DIR = "/app/run"
"""The ServerApp's run directory inside its docker-compose container."""
STATUS_POLL_S = 15.0


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
def _int_or_none(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer or null, got {value!r}")
    return value


@dataclass(frozen=True)
class DeploySettings:
    """What ``python -m experiments.deploy`` starts, and which faults it injects."""

    clients: int = 3
    rounds: int = 3
    tls: bool = True
    auth: bool = True
    kill_one_at_round: int | None = None
    rejoin_after_kill: bool = True
    restart_superlink_at_round: int | None = None
    raise_in_client_at_round: int | None = None
    crash_server_at_round: int | None = None
    min_nodes: int | None = None
    start_timeout_s: float = 120.0
    run_timeout_s: float = 3600.0
    app_overrides: tuple[str, ...] = ()
    provision_only: bool = False
    server_names: tuple[str, ...] = DEFAULT_SERVER_NAMES

    def validate(self) -> DeploySettings:
        """Raise :class:`ConfigError` on a bad value (before anything starts)."""
        for name in ("clients", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("tls", "auth", "provision_only", "rejoin_after_kill"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.auth and not self.tls:
            raise ConfigError(
                "auth=true needs tls=true: Flower only authenticates SuperNodes over TLS"
            )
        for name in ("start_timeout_s", "run_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        kill = _int_or_none(self.kill_one_at_round, "kill_one_at_round")
        if kill is not None:
            if not 1 <= kill <= self.rounds:
                raise ConfigError(
                    f"kill_one_at_round must be in [1, rounds={self.rounds}] or null, got {kill}"
                )
            if self.clients < 2:
                raise ConfigError("kill_one_at_round needs clients >= 2 (someone must remain)")
        crash = _int_or_none(self.crash_server_at_round, "crash_server_at_round")
        if crash is not None and not 1 <= crash < self.rounds:
            raise ConfigError(
                f"crash_server_at_round must be in [1, rounds-1={self.rounds - 1}] (a round must "
                f"remain to resume) or null, got {crash}"
            )
        for name in ("restart_superlink_at_round", "raise_in_client_at_round"):
            at = _int_or_none(getattr(self, name), name)
            if at is not None and not 1 <= at <= self.rounds:
                raise ConfigError(f"{name} must be in [1, rounds={self.rounds}] or null, got {at}")
        if self.raise_in_client_at_round is not None and self.clients < 2:
            raise ConfigError("raise_in_client_at_round needs clients >= 2 (someone must remain)")
        faults = ("kill_one_at_round", "restart_superlink_at_round", "raise_in_client_at_round")
        others = [n for n in faults if getattr(self, n) is not None]
        if crash is not None and others:
            raise ConfigError(
                f"crash_server_at_round restarts the run: inject it alone, not with {others}"
            )
        m = _int_or_none(self.min_nodes, "min_nodes")
        if m is not None:
            if m < 1 or m > self.clients:
                raise ConfigError(f"min_nodes must be in [1, clients={self.clients}], got {m}")
            if kill is not None and m > self.clients - 1:
                raise ConfigError(
                    f"with kill_one_at_round the server must continue with clients-1 nodes: "
                    f"min_nodes must be <= {self.clients - 1}, got {m}"
                )
        if not all(isinstance(o, str) for o in self.app_overrides):
            raise ConfigError(f"app_overrides must be a list of strings, got {self.app_overrides}")
        if not self.server_names or not all(isinstance(n, str) and n for n in self.server_names):
            raise ConfigError(
                f"server_names must be a non-empty list of host names or IP addresses, got "
                f"{list(self.server_names)}"
            )
        return self

    @property
    def quorum(self) -> int:
        """SuperNodes the server waits for before a round (``federation.min_available_nodes``).

        Flower's strategies sample ``fraction × connected`` nodes but at least this many, so
        every connected SuperNode trains while a quorum below ``clients`` lets the federation
        continue after a dropout.
        """
        if self.min_nodes is not None:
            return self.min_nodes
        return self.clients - 1 if self.kill_one_at_round is not None else self.clients


def settings_from_config(cfg: DictConfig | dict[str, Any]) -> DeploySettings:
    """The deploy keys of the composed ``conf/deploy.yaml``, validated."""
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    if not isinstance(raw, dict):
        raise ConfigError(f"the deploy config must be a mapping, got {type(raw).__name__}")
    values = {k: raw[k] for k in DEPLOY_KEYS if k in raw}
    values["app_overrides"] = tuple(values.get("app_overrides") or ())
    if "server_names" in values:
        values["server_names"] = tuple(values["server_names"] or ())
    return DeploySettings(**values).validate()


def forwarded_overrides(
    cli_overrides: Sequence[str], own_keys: frozenset[str] = frozenset()
) -> list[str]:
    """The command-line overrides meant for the app (all but deploy keys, ``own_keys`` of the
    calling command and ``hydra.*``)."""
    out = []
    for override in cli_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        top = key.split(".", 1)[0]
        if top in DEPLOY_KEYS or top in own_keys or top == "hydra":
            continue
        if key in RESERVED_APP_KEYS:
            raise ConfigError(f"{key} is set by the deployment; use {RESERVED_APP_KEYS[key]}")
        out.append(override)
    return out


def app_overrides(
    settings: DeploySettings, forwarded: Sequence[str] = (), *, resume: bool = False
) -> list[str]:
    """The Hydra overrides of the app: ``app_overrides``, the forwarded ones, then the
    deployment's own (quorum, rounds, resume)."""
    for override in settings.app_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in RESERVED_APP_KEYS:
            raise ConfigError(f"{key} is set by the deployment; use {RESERVED_APP_KEYS[key]}")
    out = [*settings.app_overrides, *forwarded]
    out += [
        f"federation.num_clients={settings.clients}",
        f"federation.min_available_nodes={settings.quorum}",
        f"federation.rounds={settings.rounds}",
    ]
    if resume:
        out.append("experiment.resume=true")
    return out


def app_config(overrides: Sequence[str], run_dir: str | Path) -> FederatedRunConfig:
    """The app's config exactly as the ServerApp and ClientApps compose it (validated)."""
    register_schemas()
    try:
        raw = compose(["experiment=federation", *overrides])
    except (HydraException, OmegaConfBaseException) as err:  # they name the bad override
        raise ConfigError(f"bad app override: {err}") from err
    return federated_from_dict(raw, run_dir)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def checkpoint_round(run_dir: Path) -> int:
    """The last round the ServerApp checkpointed (0 before the first)."""
    try:
        return int(json.loads((run_dir / CHECKPOINT_STATE).read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


def serverapp_pids(procs: Processes) -> list[int]:
    """The ``flwr-serverapp`` processes the ServerApp SuperExec is running."""
    superexec = procs.procs.get("superexec-serverapp")
    if superexec is None:
        return []
    return [
        pid
        for pid in children(superexec.pid)
        if any(Path(part).name == "flwr-serverapp" for part in cmdline(pid)[:2])
    ]


def app_run_config(path: str | Path, overrides: Sequence[str], run_dir: str | Path) -> Path:
    """The run config file of ``flwr run --run-config <file>``: ``overrides`` and ``run-dir``."""
    quoted = " ".join(shlex.quote(o) for o in overrides)
    return write_run_config(path, {"overrides": quoted, "run-dir": str(run_dir)})


def start_run(cluster: Cluster, layout: Layout, overrides: Sequence[str]) -> int:
    """``flwr run`` the app with ``overrides``; returns the run id."""
    run_config = app_run_config(layout.operator / "run-config.toml", overrides, layout.server_run)
    run_id = cluster.cli.run(PROJECT_ROOT, run_config)
    log.info("started run %d", run_id)
    return run_id


def servers_alive(procs: Processes, run_id: int) -> Callable[[], None]:
    """A check for :func:`wait_run`: the SuperLink and the ServerApp's SuperExec still run."""

    def check() -> None:
        for name in ("superlink", "superexec-serverapp"):
            proc = procs.procs[name]
            if not proc.alive():
                raise RuntimeError(
                    f"{name} exited (code {proc.returncode()}) during run {run_id}:\n"
                    f"{proc.log_tail()}"
                )

    return check


def wait_run(
    cli: FlwrCli,
    server_run: Path,
    run_id: int,
    timeout_s: float,
    alive: Callable[[], None],
    hook: Callable[[], bool] | None = None,
) -> str:
    """Wait for the run to finish; returns its status, or ``"interrupted"`` when ``hook()``
    (called about once a second) returns true. ``alive()`` raises when a party the run needs
    has died.

    The SuperLink is asked for the status every ``STATUS_POLL_S`` seconds, and at once when the
    ServerApp has written ``server.json`` to ``server_run`` (its last act), so that the ``flwr``
    CLI does not take CPU from the apps.
    """
    deadline = time.monotonic() + timeout_s
    next_status = time.monotonic() + STATUS_POLL_S
    server_json = server_run / "server.json"
    while True:
        alive()
        if hook is not None and hook():
            return "interrupted"
        if time.monotonic() >= next_status or server_json.exists():
            status = cli.status(run_id)
            if status.startswith("finished:"):
                return status
            next_status = time.monotonic() + (2.0 if server_json.exists() else STATUS_POLL_S)
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not finish within {timeout_s:.0f}s")
        time.sleep(1.0)


@dataclass
class FaultLog:
    """What the deployment did to the federation."""

    dropouts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    server_crashes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    run_ids: list[int] = dataclasses.field(default_factory=list)
    rejoined: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    superlink_restarts: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _kill_hook(
    settings: DeploySettings, cluster: Cluster, procs: Processes, faults: FaultLog
) -> Callable[[], bool]:
    """SIGKILL the last device (SuperNode + ClientApp SuperExec) once round ``k`` starts; with
    ``rejoin_after_kill``, start it again (same keys, same state directory) once round ``k``
    is checkpointed."""
    k = settings.kill_one_at_round
    victim = settings.clients - 1
    run_dir = cluster.layout.server_run

    def hook() -> bool:
        if k is None:
            return False
        if not faults.dropouts:
            if checkpoint_round(run_dir) >= k - 1 and serverapp_pids(procs):
                for name in (f"supernode-{victim}", f"superexec-clientapp-{victim}"):
                    procs.kill(name)
                faults.dropouts.append(
                    {"node": f"supernode-{victim}", "partition_id": victim, "killed_at_round": k,
                     "cause": "killed (SIGKILL) by kill_one_at_round"}
                )  # fmt: skip
                log.info("killed supernode-%d at the start of round %d", victim, k)
        elif settings.rejoin_after_kill and not faults.rejoined:
            done = checkpoint_round(run_dir)
            if done >= k and done < settings.rounds:
                cluster.start_device(victim)
                faults.rejoined.append(
                    {"node": f"supernode-{victim}", "partition_id": victim, "after_round": done}
                )
                log.info("started supernode-%d again after round %d", victim, done)
        return False

    return hook


def _superlink_hook(
    settings: DeploySettings, cluster: Cluster, procs: Processes, faults: FaultLog
) -> Callable[[], bool]:
    """SIGKILL the SuperLink while round ``k`` runs and start it again on its database."""
    k = settings.restart_superlink_at_round

    def hook() -> bool:
        if k is None or faults.superlink_restarts:
            return False
        if checkpoint_round(cluster.layout.server_run) >= k - 1 and serverapp_pids(procs):
            start = time.monotonic()
            cluster.restart_superlink(settings.start_timeout_s)
            faults.superlink_restarts.append(
                {"at_round": k, "database": str(cluster.database),
                 "down_seconds": round(time.monotonic() - start, 2)}
            )  # fmt: skip
            log.info("restarted the SuperLink during round %d", k)
        return False

    return hook


def _crash_hook(
    settings: DeploySettings, layout: Layout, procs: Processes, faults: FaultLog
) -> Callable[[], bool]:
    """SIGKILL the ServerApp once round ``k`` is checkpointed; ends the wait."""
    k = settings.crash_server_at_round

    def hook() -> bool:
        if k is None or faults.server_crashes or checkpoint_round(layout.server_run) < k:
            return False
        pids = serverapp_pids(procs)
        if not pids:
            return False
        state = json.loads((layout.server_run / CHECKPOINT_STATE).read_text())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return False  # it had just finished; nothing left to crash
        # what the checkpoint held when the ServerApp died (the restart must keep it)
        (layout.root / "crash-checkpoint.json").write_text(json.dumps(state, indent=1))
        faults.server_crashes.append({"after_round": int(state["round"]), "pids": pids})
        log.info("killed the ServerApp (pids %s) after round %s", pids, state["round"])
        return True

    return hook


def save_log(cli: FlwrCli, layout: Layout, run_id: int) -> Path:
    """Keep the ServerApp's log of ``run_id`` (the SuperLink holds it) in the server's folder."""
    path = layout.server / f"serverapp-{run_id}.log"
    path.write_text(cli.logs(run_id))
    return path


def check_status(status: str, run_id: int, server_log: Path) -> None:
    """Raise unless the run completed, with the end of the ServerApp's log."""
    if status != "finished:completed":
        raise RuntimeError(
            f"run {run_id} ended as {status!r}; the ServerApp log ({server_log}) ends with:\n"
            f"{server_log.read_text()[-3000:]}"
        )


def run_federation(
    settings: DeploySettings,
    overrides: Sequence[str],
    resume_overrides: Sequence[str],
    cluster: Cluster,
    layout: Layout,
    procs: Processes,
) -> FaultLog:
    """One ``flwr run`` (two with a ServerApp crash) until all rounds are done."""
    faults = FaultLog()
    hooks = [_kill_hook(settings, cluster, procs, faults),
             _superlink_hook(settings, cluster, procs, faults),
             _crash_hook(settings, layout, procs, faults)]  # fmt: skip
    run_id = start_run(cluster, layout, overrides)
    faults.run_ids.append(run_id)
    status = wait_run(
        cluster.cli, layout.server_run, run_id, settings.run_timeout_s,
        servers_alive(procs, run_id), lambda: any([hook() for hook in hooks]),
    )  # fmt: skip
    if status == "interrupted":  # the ServerApp crashed: stop that run, start a resuming one
        cluster.cli.stop(run_id)
        save_log(cluster.cli, layout, run_id)
        run_id = start_run(cluster, layout, resume_overrides)
        faults.run_ids.append(run_id)
        status = wait_run(
            cluster.cli, layout.server_run, run_id, settings.run_timeout_s,
            servers_alive(procs, run_id),
        )  # fmt: skip
    server_log = save_log(cluster.cli, layout, run_id)
    if settings.kill_one_at_round is not None and not faults.dropouts:
        log.warning("the run ended before round %d started: no SuperNode was killed",
                    settings.kill_one_at_round)  # fmt: skip
    if settings.crash_server_at_round is not None and not faults.server_crashes:
        log.warning("the run ended before the ServerApp could be crashed after round %d",
                    settings.crash_server_at_round)  # fmt: skip
    check_status(status, run_id, server_log)
    for i in range(settings.clients):  # a device that died by itself is a dropout too
        proc = procs.procs[f"supernode-{i}"]
        if not proc.alive() and not any(d["partition_id"] == i for d in faults.dropouts):
            faults.dropouts.append(
                {"node": proc.name, "partition_id": i, "killed_at_round": None,
                 "cause": f"exited with code {proc.returncode()}"}
            )  # fmt: skip
    return faults


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
def evaluate_as_owner(layout: Layout, fcfg: FederatedRunConfig, clients: int) -> dict[str, Any]:
    """Decrypt the final global student as the key owner and compare it with the heuristics.

    The owner's directory already holds ``secret.ctx`` and the teacher; it reads the server's
    checkpoint (ciphertexts) where the server wrote it and, for ``feddistill``, gets a copy of
    the nodes' own models.
    """
    from common.mec import evaluate_policy
    from common.mec.policies import make_policy
    from experiments.tasks.federation import compare, final_student

    owner_cfg = fcfg.at(layout.server_run, layout.owner)
    if fcfg.strategy.name == "feddistill":
        owner_cfg.states_dir.mkdir(parents=True, exist_ok=True)
        for i in range(clients):
            for path in (layout.node(i) / "state").glob("client-*-r*.npz"):
                shutil.copyfile(path, owner_cfg.states_dir / path.name)
    policies = compare(owner_cfg, final_student(owner_cfg))
    if "random" not in policies:
        policies["random"] = evaluate_policy(
            fcfg.scenario, make_policy("random"), fcfg.final_eval_episodes, fcfg.eval_seed
        )
    return policies


def _rounds_trained(layout: Layout, partition_id: int) -> list[int]:
    """Rounds a SuperNode saved a local state for (its latest few: a round it trained in)."""
    pattern = f"client-{partition_id}-r*.npz"
    found = (
        p.stem.rpartition("-r")[2] for p in (layout.node(partition_id) / "state").glob(pattern)
    )
    return sorted(int(r) for r in found if r.isdigit())


def fault_report(
    settings: DeploySettings, faults: FaultLog, history: list[dict[str, Any]], layout: Layout
) -> list[dict[str, Any]]:
    """Each injected fault, when, and what survived it (every round completed; a killed device
    trained again after rejoining; a raising ClientApp cost its own reply only)."""
    rows = {int(r["round"]): r for r in history}
    completed = sorted(rows) == list(range(1, settings.rounds + 1))
    out: list[dict[str, Any]] = []
    for d in faults.dropouts:
        k, pid = d["killed_at_round"], d["partition_id"]
        entry: dict[str, Any] = {"fault": "supernode_killed" if k else "supernode_exited",
                                 "node": d["node"], "round": k, "cause": d["cause"]}  # fmt: skip
        survived = completed
        rejoined = [r for r in faults.rejoined if r["partition_id"] == pid]
        if k is not None and settings.rejoin_after_kill:
            later = [r for r in _rounds_trained(layout, pid) if r > k]
            entry["rejoined_after_round"] = rejoined[0]["after_round"] if rejoined else None
            entry["trained_again_in_rounds"] = later  # the latest ones its state files hold
            survived = survived and bool(later)
        out.append({**entry, "survived": survived})
    for s in faults.superlink_restarts:
        out.append({"fault": "superlink_restarted", "round": s["at_round"],
                    "database": s["database"], "down_seconds": s["down_seconds"],
                    "runs": list(faults.run_ids), "survived": completed})  # fmt: skip
    r = settings.raise_in_client_at_round
    if r is not None:
        row = rows.get(r, {})
        errors = row.get("failed", row.get("clients_train", 0) - row.get("clients_replied", 0))
        out.append({"fault": "clientapp_raised", "node": "supernode-0", "round": r,
                    "error_replies": errors, "replies_used": row.get("clients_replied"),
                    "survived": completed and errors >= 1})  # fmt: skip
    for c in faults.server_crashes:
        out.append({"fault": "serverapp_crashed", "round": c["after_round"],
                    "resumed_in_run": faults.run_ids[-1], "survived": completed})  # fmt: skip
    return out


def summarize(
    settings: DeploySettings,
    history: list[dict[str, Any]],
    policies: dict[str, dict[str, Any]],
    faults: FaultLog,
    results_path: Path,
    report: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The one-line JSON summary of a deployment (``report``: :func:`fault_report`)."""
    student, random_qoe = policies["student"]["qoe"], policies["random"]["qoe"]
    return {
        "rounds_completed": len(history),
        "rounds": settings.rounds,
        "clients": settings.clients,
        "clients_per_round": [int(r.get("clients_replied", 0)) for r in history],
        "clients_sampled_per_round": [int(r.get("clients_train", 0)) for r in history],
        "rounds_with_missing_replies": [
            r["round"] for r in history if r.get("clients_replied", 0) < r.get("clients_train", 0)
        ],
        "final_qoe": float(student),
        "random_qoe": float(random_qoe),
        "beats_random": bool(student > random_qoe),
        "dropouts": faults.dropouts,
        "faults": report or [],
        "server_restarts": len(faults.server_crashes),
        "resumed_after_round": (
            faults.server_crashes[0]["after_round"] if faults.server_crashes else None
        ),
        "tls": settings.tls,
        "auth": settings.auth,
        "run_ids": faults.run_ids,
        "results": str(results_path),
    }


@dataclass(frozen=True)
class Prepared:
    """A validated deployment: where its parties live and the app's config."""

    layout: Layout
    overrides: list[str]
    resume_overrides: list[str]
    fcfg: FederatedRunConfig


def prepare(settings: DeploySettings, forwarded: Sequence[str], out_dir: str | Path) -> Prepared:
    """Validate the app's config (a bad value fails here, before anything is made or started)."""
    layout = Layout(Path(out_dir).resolve())
    overrides = app_overrides(settings, forwarded)
    resume_overrides = app_overrides(settings, forwarded, resume=True)
    fcfg = app_config(overrides, layout.server_run)
    app_config(resume_overrides, layout.server_run)
    if layout.server_run.exists() and any(layout.server_run.iterdir()):
        raise ConfigError(f"{layout.server_run} is not empty; deploy into a fresh directory")
    return Prepared(layout, overrides, resume_overrides, fcfg)


def provision_for_operator(settings: DeploySettings, prepared: Prepared) -> dict[str, Any]:
    """The material of ``provision_only``: every party's files, plus the operator's ``flwr``
    connection (docker-compose's SuperLink address) and run configs; nothing is started."""
    layout = prepared.layout
    given = provision(layout, prepared.fcfg, settings.clients, settings.tls, settings.server_names)
    (layout.superlink / "state").mkdir(exist_ok=True)  # the SuperLink's database (compose)
    ca = layout.operator / "ca.crt" if settings.tls else None
    FlwrCli(layout.operator / "flwr-home", COMPOSE_SUPERLINK, ca)
    app_run_config(layout.operator / "run-config.toml", prepared.overrides, layout.server_run)
    app_run_config(layout.operator / "run-config.compose.toml", prepared.overrides, COMPOSE_RUN_DIR)
    return {"provisioned": str(layout.root), "clients": settings.clients, "files": given}


def finish(
    settings: DeploySettings, prepared: Prepared, faults: FaultLog, title: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """After the run: the key owner's evaluation, ``results.json``, ``report.md``; returns the
    one-line summary and the results."""
    from experiments.figures import write_report

    layout, fcfg, overrides = prepared.layout, prepared.fcfg, prepared.overrides
    history = json.loads((layout.server_run / "server.json").read_text())["rounds"]
    policies = evaluate_as_owner(layout, fcfg, settings.clients)
    results_path = layout.root / "results.json"
    report = fault_report(settings, faults, history, layout)
    summary = summarize(settings, history, policies, faults, results_path, report)
    results = {
        "config": {
            "deploy": dataclasses.asdict(settings),
            "app_overrides": list(overrides),
            "resolved": json.loads(json.dumps(dataclasses.asdict(fcfg), default=str)),
        },
        "rounds": history,
        "policies": policies,
        "summary": {
            "student_policy": "student",
            "final_qoe": policies["student"]["qoe"],
            "first_round_qoe": history[0].get("eval_qoe") if history else None,
            "last_round_qoe": history[-1].get("eval_qoe") if history else None,
            "beats": {
                h: policies["student"]["qoe"] > policies[h]["qoe"]
                for h in fcfg.heuristics
                if h in policies
            },
            "bytes_up_total": int(sum(r.get("bytes_up", 0) for r in history)),
            "bytes_down_total": int(sum(r.get("bytes_down", 0) for r in history)),
        },
        "deploy": summary,
    }
    results_path.write_text(json.dumps(results, indent=1, default=float))
    write_report(layout.root, results, title=title)
    return summary, results


def deploy(
    settings: DeploySettings, forwarded: Sequence[str], out_dir: str | Path
) -> dict[str, Any]:
    """Provision, start, run, evaluate and stop; returns the summary (also in results.json)."""
    prepared = prepare(settings, forwarded, out_dir)
    if settings.provision_only:  # the operator's files for docker-compose or several machines
        return provision_for_operator(settings, prepared)
    layout = prepared.layout
    provision(layout, prepared.fcfg, settings.clients, settings.tls, settings.server_names)
    with Processes(layout.root / "logs") as procs:
        cluster = Cluster(
            layout, procs, clients=settings.clients, tls=settings.tls, auth=settings.auth
        )
        if settings.raise_in_client_at_round is not None:
            cluster.client_faults[0] = settings.raise_in_client_at_round
        cluster.start_all(settings.start_timeout_s)
        faults = run_federation(
            settings, prepared.overrides, prepared.resume_overrides, cluster, layout, procs
        )
    summary, _ = finish(settings, prepared, faults, "KECO deployment (SuperLink + SuperNodes)")
    return summary


def _terminate(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGHUP: leave through ``finally`` blocks so every started process is stopped."""
    raise SystemExit(128 + signum)


@hydra_app("deploy")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Entry point of ``python -m experiments.deploy``: prints the summary as its last line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    settings = settings_from_config(cfg)
    forwarded = forwarded_overrides(HydraConfig.get().overrides.task)
    summary = deploy(settings, forwarded, HydraConfig.get().runtime.output_dir)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    register_schemas()
    main()

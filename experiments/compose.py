"""docker-compose.yml for real: the same deployment as ``experiments.deploy``, in containers.

``python -m experiments.compose [engine=auto|docker|podman] [images=auto|registry|local]
[rounds=<r>] [app overrides]`` (Hydra overrides of ``conf/compose.yaml``, which extends
``conf/deploy.yaml``; ``make compose-demo`` runs it):

1. The engine: Docker if its daemon answers, else rootful Podman with ``podman-compose``
   (``docker/engine.sh setup`` installs and configures Podman from Debian's packages when
   missing, as root).
2. The images: Flower's ``superlink``, ``supernode`` and ``superexec`` images from the registry,
   or, when it cannot be reached, the same Flower version built from ``docker/flower.Dockerfile``
   on a Debian base made without a registry (``docker/engine.sh debian-base``); then the app
   image (``Dockerfile``) on top of that ``superexec``, with the CPU torch wheel and the
   ``.venv``'s package versions (``docker/pip/``).
3. The parties' files, exactly as ``python -m experiments.deploy provision_only=true`` writes
   them, handed to Flower's ``app`` user (uid 49999) of the images.
4. ``compose up`` of the SuperLink (TLS, SuperNode authentication, state database) and the
   ServerApp's SuperExec; ``flwr supernode register`` of each SuperNode's key; ``compose up``
   of the devices (SuperNode + ClientApp SuperExec); ``flwr run`` against the published port.
5. While the containers run: which of them can read the CKKS secret context (searched by
   content in every container's filesystem). Then ``compose down`` and a check that no
   container, network or pod of the project is left.
6. As the key owner, decrypt the final global student and compare it with the heuristics (the
   deploy driver's own code: same results, same final QoE as ``experiments.deploy`` with the
   same seed).

The last printed line is a JSON summary: the deploy driver's plus ``containers``, the bytes
exchanged and the seconds of each phase.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from common.config import ConfigError
from common.crypto import SECRET_CONTEXT_FILE
from common.fed.settings import register_schemas
from experiments.cli import hydra_app
from experiments.deploy import (
    PROJECT_ROOT,
    DeploySettings,
    FaultLog,
    Prepared,
    check_status,
    finish,
    prepare,
    provision_for_operator,
    save_log,
    settings_from_config,
    wait_run,
)
from experiments.deploy_lib.cli import BIN, FlwrCli
from experiments.deploy_lib.cluster import AUTH_KEY, HOST, Layout, superlink_ready
from experiments.deploy_lib.procs import free_port, wait_for

log = logging.getLogger("keco.compose")

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENGINE_SCRIPT = PROJECT_ROOT / "docker" / "engine.sh"
FLOWER_DOCKERFILE = PROJECT_ROOT / "docker" / "flower.Dockerfile"
PIP_DIR = PROJECT_ROOT / "docker" / "pip"
"""Build inputs of the images made here: the CPU torch wheel and the .venv's versions."""
TORCH_VERSION = "2.13.0"
DEBIAN_BASE = "localhost/keco-debian:bookworm"
LOCAL_FLOWER = "localhost/keco-flwr"
"""Where the locally built Flower images live (``FLWR_IMAGES`` of docker-compose.yml)."""
FLOWER_IMAGES = ("superlink", "supernode", "superexec")
APP_UID = 49999
"""The user ``app`` of Flower's images, which must own the files mounted into them."""
SERVER_SERVICES = ("superlink", "superexec-serverapp")
ALIVE_POLL_S = 10.0
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
"""Labels that both Docker Compose and podman-compose put on containers and networks."""
COMPOSE_KEYS = frozenset(
    {"engine", "images", "superlink_port", "pull_timeout_s", "build_timeout_s"}
)
"""Top-level keys of ``conf/compose.yaml`` beyond those of ``conf/deploy.yaml``."""
FIND_BY_CONTENT = """
import hashlib, os, sys
size, digest = int(sys.argv[1]), sys.argv[2]
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in files:
        path = os.path.join(root, name)
        try:
            if os.path.islink(path) or os.path.getsize(path) != size:
                continue
            with open(path, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() == digest:
                    print(path)
        except OSError:
            pass
"""
"""Run inside a container as its own user: every file it can read whose content is the key."""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComposeSettings:
    """How ``python -m experiments.compose`` runs the containers."""

    engine: str = "auto"
    images: str = "auto"
    superlink_port: int | None = None
    pull_timeout_s: float = 900.0
    build_timeout_s: float = 3600.0

    def validate(self) -> ComposeSettings:
        """Raise :class:`ConfigError` on a bad value (before anything starts)."""
        if self.engine not in ("auto", "docker", "podman"):
            raise ConfigError(f"engine must be auto, docker or podman, got {self.engine!r}")
        if self.images not in ("auto", "registry", "local"):
            raise ConfigError(f"images must be auto, registry or local, got {self.images!r}")
        port = self.superlink_port
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 1 <= port <= 65535):  # fmt: skip
            raise ConfigError(f"superlink_port must be a TCP port or null, got {port!r}")
        for name in ("pull_timeout_s", "build_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        return self


def compose_settings(cfg: DictConfig | Mapping[str, Any]) -> ComposeSettings:
    """The compose keys of the composed ``conf/compose.yaml``, validated."""
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    return ComposeSettings(**{k: raw[k] for k in COMPOSE_KEYS if k in raw}).validate()


def compose_devices(compose: Mapping[str, Any]) -> int:
    """How many devices (``supernode-<i>`` services) docker-compose.yml defines."""
    return sum(name.startswith("supernode-") for name in compose["services"])


def check_deploy_settings(settings: DeploySettings, devices: int) -> None:
    """The deploy settings that docker-compose.yml can run (it fixes TLS, auth and devices)."""
    if settings.clients != devices:
        raise ConfigError(
            f"docker-compose.yml defines {devices} devices: clients must be {devices}, "
            f"got {settings.clients} (add supernode-<i> and superexec-clientapp-<i> services "
            f"for more)"
        )
    if not (settings.tls and settings.auth):
        raise ConfigError("docker-compose.yml runs the SuperLink with TLS and SuperNode "
                          "authentication: tls and auth must be true")  # fmt: skip
    if settings.kill_one_at_round is not None or settings.crash_server_at_round is not None:
        raise ConfigError(
            "faults (kill_one_at_round, crash_server_at_round) are injected by "
            "`python -m experiments.deploy` only"
        )


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------
def _run(argv: Sequence[str], log_path: Path, timeout_s: float, what: str, **kw: Any) -> str:
    """Run ``argv`` with its output appended to ``log_path``; returns the output, raises with
    its end on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s,
            stdin=subprocess.DEVNULL, **kw,
        )  # fmt: skip
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"{what} did not finish within {timeout_s:.0f}s ({log_path})") from err
    with open(log_path, "a") as fh:
        fh.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {done.returncode}); {log_path} ends with:\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
    return done.stdout


@dataclass(frozen=True)
class Engine:
    """A container engine (``docker`` or rootful ``podman``) and its compose tool."""

    name: str
    logs: Path

    @classmethod
    def setup(cls, choice: str, logs: Path) -> Engine:
        """``docker/engine.sh setup`` (installs Podman when there is no engine), or the engine
        asked for."""
        logs.mkdir(parents=True, exist_ok=True)
        if choice == "docker":
            _run(["docker", "info"], logs / "engine.log", 120, "`docker info` (is dockerd up?)")
            return cls("docker", logs)
        out = _run(["bash", str(ENGINE_SCRIPT), "setup"], logs / "engine.log", 1800,
                   "docker/engine.sh setup")  # fmt: skip
        name = out.strip().splitlines()[-1] if out.strip() else ""
        if choice == "podman" and name != "podman":
            name = "podman"  # Docker answers too, but Podman was asked for
        if name not in ("docker", "podman"):
            raise RuntimeError(f"docker/engine.sh setup named no engine: {out[-500:]!r}")
        engine = cls(name, logs)
        if name == "podman" and not (BIN / "podman-compose").exists():
            raise ConfigError(
                f"podman-compose is not installed next to {sys.executable}: "
                f"pip install -e '.[compose]'"
            )
        return engine

    def __call__(self, *args: str, timeout_s: float = 300, what: str | None = None) -> str:
        """Run ``<engine> <args>``; returns its output."""
        return _run([self.name, *args], self.logs / f"{self.name}.log", timeout_s,
                    what or f"`{self.name} {' '.join(args[:2])}`")  # fmt: skip

    def ok(self, *args: str, timeout_s: float = 300) -> bool:
        """Whether ``<engine> <args>`` succeeds."""
        try:
            self(*args, timeout_s=timeout_s)
        except RuntimeError:
            return False
        return True

    def has_image(self, ref: str) -> bool:
        return self.image_id(ref) is not None

    def image_id(self, ref: str) -> str | None:
        """The id of the local image ``ref`` (None if there is none)."""
        try:
            return self("image", "inspect", "--format", "{{.Id}}", ref, timeout_s=60).strip()
        except RuntimeError:
            return None

    def registry_ref(self, name: str) -> str:
        """Flower's image on Docker Hub (fully qualified for Podman's short-name rules)."""
        return f"docker.io/flwr/{name}" if self.name == "podman" else f"flwr/{name}"

    def compose_argv(self, project: str) -> list[str]:
        if self.name == "docker":
            return ["docker", "compose", "-p", project, "-f", str(COMPOSE_FILE)]
        # no pod: each service keeps its own network namespace, as under Docker
        return [str(BIN / "podman-compose"), "--in-pod", "false", "-p", project,
                "-f", str(COMPOSE_FILE)]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def pip_inputs(log_path: Path) -> dict[str, Any]:
    """Fill ``docker/pip``: the CPU torch wheel (if pip finds it without the CUDA one) and the
    ``.venv``'s package versions as constraints."""
    PIP_DIR.mkdir(exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    wheels = sorted(PIP_DIR.glob(f"torch-{TORCH_VERSION}+cpu-*.whl"))
    if not wheels:
        try:  # "+cpu" never matches the CUDA build; where it is not at hand this simply fails
            _run([*pip, "download", f"torch=={TORCH_VERSION}+cpu", "--no-deps",
                  "--only-binary=:all:", "-d", str(PIP_DIR)], log_path, 1800,
                 "pip download torch")  # fmt: skip
            wheels = sorted(PIP_DIR.glob(f"torch-{TORCH_VERSION}+cpu-*.whl"))
        except RuntimeError:
            log.info("no CPU torch wheel at hand: the app image takes it from the CPU index")
    frozen = _run([*pip, "freeze", "--exclude-editable"], log_path, 300, "pip freeze")
    pins = "".join(line + "\n" for line in frozen.splitlines() if "==" in line)
    target = PIP_DIR / "constraints.txt"
    if not target.exists() or target.read_text() != pins:  # unchanged: the build cache holds
        target.write_text(pins)
    return {"torch_wheel": wheels[0].name if wheels else None}


def build_images(engine: Engine, settings: ComposeSettings, version: str) -> dict[str, Any]:
    """Flower's images (pulled, or built locally) and the app image; returns what was used."""
    logs = engine.logs
    use_registry = settings.images == "registry"
    if settings.images == "auto":
        try:
            engine("pull", engine.registry_ref(f"superexec:{version}"),
                   timeout_s=settings.pull_timeout_s)  # fmt: skip
            use_registry = True
        except RuntimeError as err:
            log.info("no registry (%s): building Flower %s locally", str(err)[-200:], version)
    if use_registry:
        prefix = engine.registry_ref("").rstrip("/")
        for name in FLOWER_IMAGES:
            engine("pull", f"{prefix}/{name}:{version}", timeout_s=settings.pull_timeout_s)
    else:
        prefix = LOCAL_FLOWER
        if not engine.has_image(DEBIAN_BASE):
            log.info("making %s with mmdebstrap (no registry needed)", DEBIAN_BASE)
            _run(["bash", str(ENGINE_SCRIPT), "debian-base", DEBIAN_BASE],
                 logs / "debian-base.log", settings.build_timeout_s, "the Debian base image",
                 env={**os.environ, "ENGINE": engine.name})  # fmt: skip
    pip = pip_inputs(logs / "pip.log")
    if not use_registry:
        for name in FLOWER_IMAGES:
            log.info("building %s/%s:%s", prefix, name, version)
            engine("build", "-f", str(FLOWER_DOCKERFILE), "--target", name,
                   "--build-arg", f"DEBIAN_IMAGE={DEBIAN_BASE}",
                   "--build-arg", f"FLWR_VERSION={version}",
                   "-t", f"{prefix}/{name}:{version}", str(PROJECT_ROOT),
                   timeout_s=settings.build_timeout_s,
                   what=f"building {prefix}/{name}")  # fmt: skip
    app = f"localhost/keco-flower-superexec:{version}"
    log.info("building %s on %s/superexec:%s", app, prefix, version)
    before = engine.image_id(app)
    engine("build", "-f", str(PROJECT_ROOT / "Dockerfile"),
           "--build-arg", f"FLWR_VERSION={version}",
           "--build-arg", f"BASE_IMAGE={prefix}/superexec:{version}",
           "-t", app, str(PROJECT_ROOT),
           timeout_s=settings.build_timeout_s, what=f"building {app}")  # fmt: skip
    if before and before != engine.image_id(app):  # the code changed: drop the image it replaced
        engine.ok("rmi", before, timeout_s=300)
    return {"flower_images": prefix, "registry": use_registry, "app_image": app, **pip}


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------
def hand_over(layout: Layout, clients: int) -> None:
    """Give the mounted parties' files to the images' ``app`` user (uid 49999)."""
    parties = [layout.superlink, layout.server, *(layout.node(i) for i in range(clients))]
    if os.geteuid() != 0:
        wrong = [p for d in parties for p in [d, *d.rglob("*")] if p.stat().st_uid != APP_UID]
        if wrong:
            raise ConfigError(
                f"the containers run as uid {APP_UID} and cannot read {wrong[0]}: run as root, "
                f"or sudo chown -R {APP_UID}:{APP_UID} " + " ".join(str(d) for d in parties)
            )
        return
    for party in parties:
        for path in [party, *party.rglob("*")]:
            os.chown(path, APP_UID, APP_UID, follow_symlinks=False)


class Stack:
    """One compose project of docker-compose.yml: up, inspect, down, and what is left."""

    def __init__(self, engine: Engine, project: str, env: Mapping[str, str]) -> None:
        self.engine, self.project = engine, project
        self.env = {**os.environ, **env}
        self.compose = engine.compose_argv(project)
        self.log = engine.logs / "compose.log"
        self._alive_until = 0.0

    def _compose(self, *args: str, timeout_s: float = 600) -> str:
        return _run([*self.compose, *args], self.log, timeout_s,
                    f"compose {' '.join(args[:2])}", env=self.env, cwd=PROJECT_ROOT)  # fmt: skip

    def up(self, services: Sequence[str] = ()) -> None:
        """Start ``services`` (all when empty); images are built beforehand."""
        self._compose("up", "-d", "--no-build", *services)

    def containers(self) -> dict[str, tuple[str, str]]:
        """Container name -> (service, state) of this project's containers."""
        label = f"label={PROJECT_LABEL}={self.project}"
        ids = self.engine("ps", "-a", "-q", "--filter", label).split()
        if not ids:
            return {}
        fmt = (
            f'{{{{.Name}}}}\t{{{{index .Config.Labels "{SERVICE_LABEL}"}}}}\t{{{{.State.Status}}}}'
        )
        out = self.engine("inspect", "--format", fmt, *ids)
        rows = [line.split("\t") for line in out.splitlines() if line.count("\t") == 2]
        return {name.lstrip("/"): (service, state) for name, service, state in rows}

    def running(self) -> dict[str, str]:
        """Service -> container name of the running containers."""
        return {s: n for n, (s, state) in self.containers().items() if state == "running"}

    def alive(self, services: Sequence[str] = SERVER_SERVICES) -> bool:
        """True while ``services`` run; raises (with the service's log) when one has stopped.
        Asks the engine at most every ``ALIVE_POLL_S`` seconds (its CLI costs CPU)."""
        if time.monotonic() < self._alive_until:
            return True
        states = {s: (n, state) for n, (s, state) in self.containers().items()}
        for service in services:
            name, state = states.get(service, ("", "missing"))
            if state != "running":
                raise RuntimeError(
                    f"the {service} container is {state}:\n{self.logs_of(name)[-3000:]}"
                )
        self._alive_until = time.monotonic() + ALIVE_POLL_S
        return True

    def logs_of(self, name: str) -> str:
        try:
            return self.engine("logs", name, timeout_s=60)
        except RuntimeError as err:
            return str(err)

    def save_logs(self, out: Path) -> None:
        """Every container's output into ``out/<container>.log``."""
        out.mkdir(parents=True, exist_ok=True)
        for name in self.containers():
            done = subprocess.run([self.engine.name, "logs", name], capture_output=True,
                                  text=True, timeout=60)  # fmt: skip
            (out / f"{name}.log").write_text(done.stdout + done.stderr)

    def readers_of(self, secret: Path) -> list[str]:
        """The services whose container's own user can read a file with ``secret``'s content
        (under any name, anywhere in the container's filesystem)."""
        data = secret.read_bytes()
        args = [str(len(data)), hashlib.sha256(data).hexdigest()]
        readers = []
        for service, name in sorted(self.running().items()):
            out = subprocess.run(
                [self.engine.name, "exec", "-i", name, "python", "-", *args],
                input=FIND_BY_CONTENT, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if out.returncode != 0:
                raise RuntimeError(f"could not search {name}: {out.stderr[-1000:]}")
            if out.stdout.strip():
                readers.append(service)
        return readers

    def down(self) -> None:
        self._compose("down", timeout_s=300)

    def leftovers(self) -> list[str]:
        """Containers, networks and pods of this project that still exist."""
        label = f"label={PROJECT_LABEL}={self.project}"
        left = [f"container {n}" for n in self.containers()]
        nets = self.engine("network", "ls", "--filter", label, "--format", "{{.Name}}").split()
        left += [f"network {n}" for n in nets]
        if self.engine.name == "podman":
            pods = self.engine("pod", "ls", "--format", "{{.Name}}").split()
            left += [f"pod {p}" for p in pods if self.project in p]
        return left


@contextmanager
def running(stack: Stack, logs: Path) -> Iterator[Stack]:
    """The stack, brought down (and its logs kept) however the block ends."""
    try:
        yield stack
    finally:
        try:
            stack.save_logs(logs)
        finally:
            stack.down()


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------
def run_compose(
    settings: DeploySettings,
    csettings: ComposeSettings,
    forwarded: Sequence[str],
    out_dir: str | Path,
) -> dict[str, Any]:
    """Engine, images, provisioning, containers, run, teardown, evaluation; the summary."""
    import flwr

    t0 = time.monotonic()
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    check_deploy_settings(settings, compose_devices(compose))
    prepared: Prepared = prepare(settings, forwarded, out_dir)  # a bad app value fails here
    layout = prepared.layout
    logs = layout.root / "logs"
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        seconds[name] = round(now - since, 1)
        return now

    engine = Engine.setup(csettings.engine, logs)
    t = lap("engine", t0)
    version = flwr.__version__
    images = build_images(engine, csettings, version)
    t = lap("images", t)
    provision_for_operator(settings, prepared)
    hand_over(layout, settings.clients)
    t = lap("provision", t)

    port = csettings.superlink_port or free_port(HOST)
    project = f"keco{os.getpid()}"
    env = {"DEPLOY_DIR": str(layout.root), "FLWR_IMAGES": images["flower_images"],
           "FLWR_VERSION": version, "SUPERLINK_PORT": str(port)}  # fmt: skip
    stack = Stack(engine, project, env)
    ca = layout.operator / "ca.crt"
    cli = FlwrCli(layout.operator / "flwr-home", f"{HOST}:{port}", ca)
    faults = FaultLog()
    with running(stack, logs / "containers"):
        log.info("compose project %s: the SuperLink on %s:%d", project, HOST, port)
        stack.up(SERVER_SERVICES)
        wait_for("the SuperLink container", lambda: stack.alive() and superlink_ready(port, ca),
                 settings.start_timeout_s)  # fmt: skip
        for i in range(settings.clients):
            cli.register(layout.node(i) / f"{AUTH_KEY}.pub")
        stack.up()
        wait_for(f"{settings.clients} SuperNodes online",
                 lambda: stack.alive() and cli.online() >= settings.clients,
                 settings.start_timeout_s, interval_s=2.0)  # fmt: skip
        containers = stack.running()
        t = lap("up", t)
        run_id = cli.run(PROJECT_ROOT, layout.operator / "run-config.compose.toml")
        faults.run_ids.append(run_id)
        log.info("started run %d in %d containers", run_id, len(containers))
        status = wait_run(cli, layout.server_run, run_id, settings.run_timeout_s, stack.alive)
        check_status(status, run_id, save_log(cli, layout, run_id))
        t = lap("run", t)
        readers = stack.readers_of(layout.owner / SECRET_CONTEXT_FILE)
        t = lap("secret_search", t)
    left = stack.leftovers()
    log.info("compose down: %s", left or "no container, network or pod left")
    t = lap("down", t)
    summary, results = finish(settings, prepared, faults, "KECO deployment (docker-compose)")
    lap("evaluate", t)
    seconds["total"] = round(time.monotonic() - t0, 1)
    summary.update({
        "containers": len(containers),
        "services": sorted(containers),
        "engine": engine.name,
        "project": project,
        "images": images,
        "secret_readable_in": readers,
        "left_after_down": left,
        "bytes_up": results["summary"]["bytes_up_total"],
        "bytes_down": results["summary"]["bytes_down_total"],
        "seconds": seconds,
    })  # fmt: skip
    results["compose"] = summary
    Path(summary["results"]).write_text(json.dumps(results, indent=1, default=float))
    return summary


def _terminate(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGHUP: leave through ``finally`` blocks so that the stack is brought down."""
    raise SystemExit(128 + signum)


@hydra_app("compose")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Entry point of ``python -m experiments.compose``: prints the summary as its last line."""
    from experiments.deploy import forwarded_overrides

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    settings = settings_from_config(cfg)
    csettings = compose_settings(cfg)
    if settings.provision_only:
        raise ConfigError("provision_only is `python -m experiments.deploy`'s")
    forwarded = forwarded_overrides(HydraConfig.get().overrides.task, COMPOSE_KEYS)
    summary = run_compose(settings, csettings, forwarded, HydraConfig.get().runtime.output_dir)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    register_schemas()
    main()

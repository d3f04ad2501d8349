"""``docker-compose.yml`` and ``python -m experiments.compose``: every service as a container.

The fast tests read the compose file, the Dockerfiles and the driver's settings. The slow test
runs ``python -m experiments.compose`` for real (Docker if its daemon answers, else rootful Podman,
which the driver installs as root when missing; Flower's images are built locally when no
registry answers) and ``python -m experiments.deploy`` (local processes) with the same app and
seed, and checks that all rounds complete in 8 containers, that only the ClientApp containers
can read the CKKS secret context, that both deployments reach the same final QoE, and that no
container, network or pod of the project is left.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

from common.config import ConfigError
from common.crypto import SECRET_CONTEXT_FILE
from experiments.compose import (
    APP_UID,
    COMPOSE_KEYS,
    PROJECT_LABEL,
    ComposeSettings,
    check_deploy_settings,
    compose_devices,
    compose_settings,
)
from experiments.deploy import DeploySettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
FLOWER_DOCKERFILE = ROOT / "docker" / "flower.Dockerfile"
WORKDIR = PurePosixPath("/app")  # the working directory of Flower's images
NODE_CONFIG_ITEM = re.compile(r'([\w-]+)=("[^"]*"|\S+)')
TINY = [
    "scenario.n_devices=8", "scenario.n_slots=30", "model.hidden=[32]",
    "experiment.final_eval_episodes=3", "strategy.local.eval_episodes=1",
    "experiment.teacher_training.episodes=2", "experiment.teacher_training.steps=100",
]  # fmt: skip
CLIENTAPPS = [f"superexec-clientapp-{i}" for i in range(3)]


def substitute(value, env: dict[str, str]):
    """Compose's ``${VAR:-default}`` interpolation, applied to every string."""
    if isinstance(value, str):
        return re.sub(
            r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1), m.group(2) or ""), value
        )
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, env) for k, v in value.items()}
    return value


def load_compose(env: dict[str, str] | None = None) -> dict:
    return substitute(yaml.safe_load(COMPOSE.read_text()), env or {})


def node_config(value: str) -> dict[str, str]:
    return {k: v for k, v in NODE_CONFIG_ITEM.findall(value)}


def option(command: list[str], flag: str) -> str | None:
    for i, arg in enumerate(command):
        if arg == flag:
            return command[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def mounts(service: dict) -> dict[PurePosixPath, Path]:
    """Container path -> host path of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        src, dst = volume.split(":")[:2]
        out[PurePosixPath(dst)] = Path(src)
    return out


def host_path(service: dict, path: str) -> Path:
    """The host file behind ``path`` inside the service's container (it must be mounted)."""
    target = WORKDIR / path  # relative paths are relative to the working directory
    for dst, src in sorted(mounts(service).items(), key=lambda m: -len(str(m[0]))):
        if target == dst or dst in target.parents:
            return src / target.relative_to(dst)
    raise AssertionError(f"{target} is not mounted into the container")


def clientapp_of(services: dict, supernode: str) -> str:
    """The SuperExec service whose Runtime API address is ``supernode``'s."""
    found = [
        name
        for name, svc in services.items()
        if (option(svc.get("command", []), "--runtime-api-address") or "").split(":")[0]
        == supernode
    ]
    assert len(found) == 1, f"{supernode} needs exactly one ClientApp SuperExec: {found}"
    return found[0]


# ---- the files (fast) -----------------------------------------------------------------------
def test_images_are_flowers_own_or_the_same_version_built_locally():
    import flwr

    assert flwr.__version__.startswith("1.41")
    services = load_compose()["services"]
    assert compose_devices(load_compose()) == 3
    assert services["superlink"]["image"] == "flwr/superlink:1.41.0"
    for i in range(3):
        assert services[f"supernode-{i}"]["image"] == "flwr/supernode:1.41.0"
    apps = [n for n, s in services.items() if "build" in s]
    assert sorted(apps) == sorted(["superexec-serverapp", *CLIENTAPPS])
    for name in apps:
        assert services[name]["build"]["args"]["BASE_IMAGE"] == "flwr/superexec:1.41.0"
        assert services[name]["build"]["dockerfile"] == "Dockerfile"
    local = load_compose({"FLWR_IMAGES": "localhost/keco-flwr"})["services"]
    assert local["superlink"]["image"] == "localhost/keco-flwr/superlink:1.41.0"
    assert local["superexec-serverapp"]["build"]["args"]["BASE_IMAGE"] == (
        "localhost/keco-flwr/superexec:1.41.0"
    )
    # every container has an init process (a stop takes no 10 s grace) and no telemetry
    for name, svc in services.items():
        assert svc["init"] is True, name
        assert svc["environment"]["FLWR_TELEMETRY_ENABLED"] == "0", name
        assert svc["environment"]["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1", name

    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG FLWR_VERSION=1\.41\.\d+$", text, re.M)
    assert "ARG BASE_IMAGE=flwr/superexec:${FLWR_VERSION}" in text
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    # torch is the CPU build, from the wheel in docker/pip or the CPU index, before the project
    assert "torch-2.13.0+cpu-" in text and "download.pytorch.org/whl/cpu" in text
    assert text.index("torch-2.13.0+cpu-") < text.index("pip install --no-cache-dir .")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in ("*.ctx", "*.key", "*.pem", "outputs", ".venv"):
        assert pattern in ignored
    # the local Flower images: the layout of Flower's own (uid 49999, /app, flwr pinned)
    flower = FLOWER_DOCKERFILE.read_text()
    assert "flwr==${FLWR_VERSION}" in flower and f"--uid {APP_UID}" in flower
    for target in ("superlink", "supernode", "superexec"):
        assert re.search(rf'^FROM base AS {target}\nENTRYPOINT \["flower-{target}"\]$', flower,
                         re.M), target  # fmt: skip
    assert re.search(r"^WORKDIR /app$", flower, re.M) and re.search(r"^USER app$", flower, re.M)


def test_only_the_clientapps_get_the_secret_context_and_the_superlink_has_tls_auth_and_a_db():
    compose = load_compose({"DEPLOY_DIR": "/deploy"})
    services = compose["services"]
    link = [str(a) for a in services["superlink"]["command"]]
    assert "--insecure" not in link and "--enable-supernode-auth" in link
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert option(link, flag) is not None
    assert host_path(services["superlink"], option(link, "--database")) == Path(
        "/deploy/superlink/state/state.db"
    )
    assert services["superlink"]["ports"] == ["127.0.0.1:8000:8000"]  # loopback on the host
    secrets = {
        name: [src for src in mounts(svc).values() if src.name == SECRET_CONTEXT_FILE]
        for name, svc in services.items()
    }
    assert sorted(name for name, found in secrets.items() if found) == CLIENTAPPS
    for i in range(3):
        assert secrets[f"superexec-clientapp-{i}"] == [Path(f"/deploy/node-{i}/secret.ctx")]
    for name in ("superlink", "superexec-serverapp"):
        assert not any(src.suffix in (".ctx", ".key") and src.name != "server.key"
                       for src in mounts(services[name]).values())  # fmt: skip
    assert host_path(services["superexec-serverapp"], "/app/run") == Path("/deploy/server/run")
    partitions = []
    for i in range(3):
        cmd = [str(a) for a in services[f"supernode-{i}"]["command"]]
        assert "--insecure" not in cmd
        key = option(cmd, "--auth-supernode-private-key")
        assert host_path(services[f"supernode-{i}"], key) == Path(f"/deploy/node-{i}/auth.key")
        config = node_config(option(cmd, "--node-config"))
        partitions.append(int(config["partition-id"]))
        assert config["num-partitions"] == "3"
        app = services[clientapp_of(services, f"supernode-{i}")]
        assert host_path(app, config["secret-context"].strip('"')) == Path(
            f"/deploy/node-{i}/secret.ctx"
        )
        assert host_path(app, config["state-dir"].strip('"')) == Path(f"/deploy/node-{i}/state")
        # every party mounts only its own folder
        for name in (f"supernode-{i}", clientapp_of(services, f"supernode-{i}")):
            assert {src.parent if src.suffix else src for src in mounts(services[name]).values()
                    } <= {Path(f"/deploy/node-{i}"), Path(f"/deploy/node-{i}/state")}  # fmt: skip
        # the device's Runtime API is on its own internal network
        assert app["networks"] == [f"device-{i}"]
        assert compose["networks"][f"device-{i}"] == {"internal": True}
    assert partitions == [0, 1, 2]


def test_compose_settings_and_what_compose_cannot_run():
    assert compose_settings({"engine": "podman", "rounds": 3}).engine == "podman"
    assert COMPOSE_KEYS >= {"engine", "images", "superlink_port"}
    for values, message in [
        ({"engine": "lxc"}, "engine must be auto, docker or podman"),
        ({"images": "hub"}, "images must be auto, registry or local"),
        ({"superlink_port": 70000}, "superlink_port must be a TCP port"),
        ({"build_timeout_s": 0}, "build_timeout_s must be a number > 0"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            ComposeSettings(**values).validate()
    for values, message in [
        ({"clients": 2}, "defines 3 devices: clients must be 3"),
        ({"tls": False, "auth": False}, "tls and auth must be true"),
        ({"rounds": 2, "kill_one_at_round": 1}, "injected by `python -m experiments.deploy`"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_deploy_settings(DeploySettings(**values).validate(), 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["clients=2"], "clients must be 3"),
        (["engine=lxc"], "engine must be auto, docker or podman"),
        (["strategy.local.epochs=-1"], "strategy.local.epochs"),
    ],
)
def test_bad_input_fails_before_any_container(tmp_path, args, message):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "experiments.compose", *args, f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr
    assert not (out / "logs").exists() and not (out / "operator").exists()


# ---- the containers (slow) --------------------------------------------------------------------
def engine_available() -> bool:
    """Docker answers, Podman is installed, or we are root and may install it."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return True
    return shutil.which("podman") is not None or os.geteuid() == 0


def run(module: str, out: Path, *args: str) -> dict:
    """``python -m <module> <args> TINY`` into ``out``; its last-line JSON summary."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run(
        [sys.executable, "-m", module, *args, *TINY, f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=5400,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def compose_and_local(tmp_path_factory):
    root = tmp_path_factory.mktemp("compose")
    compose = run("experiments.compose", root / "compose", "rounds=3", "seed=3")
    local = run("experiments.deploy", root / "local", "rounds=3", "seed=3")
    return root, compose, local


needs_engine = pytest.mark.skipif(
    not engine_available(), reason="no container engine, and not root to install Podman"
)


@pytest.mark.slow
@needs_engine
def test_every_round_completes_in_eight_containers(compose_and_local):
    root, summary, _ = compose_and_local
    assert summary["rounds_completed"] == 3 and summary["clients_per_round"] == [3, 3, 3]
    assert summary["containers"] == 8
    assert summary["services"] == sorted(load_compose()["services"])
    assert summary["tls"] and summary["auth"] and summary["dropouts"] == []
    assert summary["bytes_up"] > 3 * 3 * 100_000  # CKKS ciphertexts crossed the networks
    history = json.loads((root / "compose" / "server" / "run" / "server.json").read_text())
    assert [row["round"] for row in history["rounds"]] == [1, 2, 3]
    for i in range(3):  # every device kept its state in its own mounted folder
        assert list((root / "compose" / f"node-{i}" / "state").glob(f"client-{i}-r3.npz"))
    # the SuperLink served TLS, kept its state in its database, and registered 3 SuperNodes
    logs = root / "compose" / "logs" / "containers"
    link_log = next(logs.glob("*superlink*.log")).read_text()
    assert "Uvicorn running on https://0.0.0.0:8000" in link_log
    assert (root / "compose" / "superlink" / "state" / "state.db").stat().st_size > 0
    assert link_log.count("[ControlServicer.RegisterNode] Created node_id=") == 3


@pytest.mark.slow
@needs_engine
def test_only_the_clientapp_containers_can_read_the_secret_context(compose_and_local):
    _, summary, _ = compose_and_local
    assert summary["secret_readable_in"] == CLIENTAPPS


@pytest.mark.slow
@needs_engine
def test_final_qoe_equals_the_local_process_deployment_with_the_same_seed(compose_and_local):
    _, compose, local = compose_and_local
    assert compose["rounds_completed"] == local["rounds_completed"] == 3
    assert compose["final_qoe"] == local["final_qoe"]
    assert compose["random_qoe"] == local["random_qoe"]


@pytest.mark.slow
@needs_engine
def test_nothing_is_left_running(compose_and_local):
    _, summary, _ = compose_and_local
    assert summary["left_after_down"] == []
    engine, label = summary["engine"], f"label={PROJECT_LABEL}={summary['project']}"
    for what in (["ps", "-a"], ["network", "ls"]):
        out = subprocess.run([engine, *what, "--filter", label, "--format", "{{.Names}}"
                              if what[0] == "ps" else "{{.Name}}"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert out.strip() == "", f"{engine} {what[0]}: {out}"
    if engine == "podman":
        pods = subprocess.run(["podman", "pod", "ls", "--format", "{{.Name}}"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert summary["project"] not in pods

"""``docker-compose.yml`` emulated: its services, commands and flags as local processes.

There is no Docker engine on the test machines, so the emulation reads the compose file and
starts, for every service, the executable its image runs (``flower-superlink``,
``flower-supernode``, or the ``ENTRYPOINT`` of ``Dockerfile``) with the service's own command.
Only what Docker would provide is translated: service names and container ports become loopback
ports, ``--host 0.0.0.0`` becomes ``127.0.0.1``, and container paths become the host files the
service mounts (a path the service does not mount fails the test). The material is provisioned
by ``python -m experiments.deploy provision_only=true``, exactly as the compose file's header says.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import tomllib
import yaml

from common.crypto import SECRET_CONTEXT_FILE
from experiments.deploy import app_config, evaluate_as_owner
from experiments.deploy_lib.cli import FlwrCli, base_env, write_run_config
from experiments.deploy_lib.cluster import Layout, superlink_ready
from experiments.deploy_lib.procs import Processes, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
WORKDIR = PurePosixPath("/app")  # the working directory of Flower's images
IMAGES = {"flwr/superlink": "flower-superlink", "flwr/supernode": "flower-supernode"}
PATH_FLAGS = {
    "--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--root-certificates",
    "--auth-supernode-private-key",
}  # fmt: skip
ADDRESS_FLAGS = {"--superlink", "--runtime-api-address"}
NODE_CONFIG_ITEM = re.compile(r'([\w-]+)=("[^"]*"|\S+)')
TINY = [
    "scenario.n_devices=8", "scenario.n_slots=30", "model.hidden=[32]",
    "experiment.final_eval_episodes=3", "strategy.local.eval_episodes=1",
    "experiment.teacher_training.episodes=2", "experiment.teacher_training.steps=100",
]  # fmt: skip


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


def entrypoint() -> str:
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.M)
    assert match, "Dockerfile has no exec-form ENTRYPOINT"
    return json.loads(match.group(1))[0]


def executable(service: dict) -> str:
    if "build" in service:
        assert service["build"]["dockerfile"] == "Dockerfile"
        return entrypoint()
    return IMAGES[service["image"].split(":")[0]]


def node_config(value: str) -> dict[str, str]:
    return {k: v for k, v in NODE_CONFIG_ITEM.findall(value)}


def option(command: list[str], flag: str) -> str | None:
    for i, arg in enumerate(command):
        if arg == flag:
            return command[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


class Emulation:
    """Translate compose services into local command lines."""

    def __init__(self, compose: dict, compose_dir: Path) -> None:
        self.services = compose["services"]
        self.compose_dir = compose_dir
        self.ports: dict[tuple[str, int], int] = {}

    def port(self, service: str, container_port: int) -> int:
        assert service in self.services, f"unknown service {service!r}"
        return self.ports.setdefault((service, int(container_port)), free_port())

    def mounts(self, service: str) -> dict[PurePosixPath, Path]:
        out = {}
        for volume in self.services[service].get("volumes", []):
            src, dst = volume.split(":")[:2]
            out[PurePosixPath(dst)] = (self.compose_dir / src).resolve()
        return out

    def host_path(self, service: str, path: str) -> Path:
        """The host file behind ``path`` inside ``service``'s container (must be mounted)."""
        target = WORKDIR / path  # relative paths are relative to the working directory
        for dst, src in sorted(self.mounts(service).items(), key=lambda m: -len(str(m[0]))):
            if target == dst or dst in target.parents:
                return src / target.relative_to(dst)
        raise AssertionError(f"{service}: {target} is not mounted into the container")

    def clientapp_of(self, supernode: str) -> str:
        """The SuperExec service whose Runtime API address is ``supernode``'s."""
        found = [
            name
            for name, svc in self.services.items()
            if (option(svc.get("command", []), "--runtime-api-address") or "").split(":")[0]
            == supernode
        ]
        assert len(found) == 1, f"{supernode} needs exactly one ClientApp SuperExec: {found}"
        return found[0]

    def argv(self, name: str) -> list[str]:
        command = [str(a) for a in self.services[name].get("command", [])]
        out, i = [executable(self.services[name])], 0
        while i < len(command):
            arg = command[i]
            flag, inline = (arg.split("=", 1) + [None])[:2] if arg.startswith("--") else (arg, None)
            takes_value = flag in PATH_FLAGS | ADDRESS_FLAGS | {"--host", "--port", "--node-config"}
            if not takes_value:
                out.append(arg)
                i += 1
                continue
            value = inline if inline is not None else command[i + 1]
            i += 1 if inline is not None else 2
            if flag == "--host":
                assert value == "0.0.0.0", f"{name}: containers listen on all interfaces"
                value = "127.0.0.1"
            elif flag == "--port":
                value = str(self.port(name, int(value)))
            elif flag in ADDRESS_FLAGS:
                host, port = value.rsplit(":", 1)
                value = f"127.0.0.1:{self.port(host, int(port))}"
            elif flag in PATH_FLAGS:
                value = str(self.host_path(name, value))
            else:  # --node-config: paths of the container that runs the ClientApp
                app = self.clientapp_of(name)
                items = []
                for key, val in node_config(value).items():
                    if val.startswith('"') and val.strip('"').startswith("/"):
                        val = json.dumps(str(self.host_path(app, val.strip('"'))))
                    items.append(f"{key}={val}")
                value = " ".join(items)
            out += [flag, value]
        return out

    def order(self) -> list[str]:
        """Services in ``depends_on`` order."""
        done: list[str] = []
        while len(done) < len(self.services):
            ready = [
                n
                for n, s in self.services.items()
                if n not in done and all(d in done for d in s.get("depends_on", []))
            ]
            assert ready, "depends_on has a cycle"
            done += ready
        return done


# ---- the file itself (fast) ----------------------------------------------------------------
def test_compose_layout_pins_flower_1_41_and_the_dockerfile():
    import flwr

    compose = load_compose()
    services = compose["services"]
    assert flwr.__version__.startswith("1.41")
    supernodes = sorted(n for n in services if n.startswith("supernode-"))
    assert supernodes == ["supernode-0", "supernode-1", "supernode-2"]
    emu = Emulation(compose, ROOT)
    assert services["superlink"]["image"] == "flwr/superlink:1.41.0"
    for name in supernodes:
        assert services[name]["image"] == "flwr/supernode:1.41.0"
        assert executable(services[emu.clientapp_of(name)]) == "flower-superexec"
    assert executable(services["superexec-serverapp"]) == "flower-superexec"
    assert option(services["superexec-serverapp"]["command"], "--runtime-api-address") == (
        "superlink:8000"
    )
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG FLWR_VERSION=1\.41\.\d+$", text, re.M)
    assert "FROM flwr/superexec:${FLWR_VERSION}" in text
    assert text.index('"torch==2.13.0"') < text.index("pip install --no-cache-dir .")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in ("*.ctx", "*.key", "*.pem", "outputs", ".venv"):
        assert pattern in ignored


def test_only_the_clientapps_get_the_secret_context_and_the_superlink_has_tls_and_auth():
    compose = load_compose({"DEPLOY_DIR": "/deploy"})
    services, emu = compose["services"], Emulation(compose, ROOT)
    link = [str(a) for a in services["superlink"]["command"]]
    assert "--insecure" not in link and "--enable-supernode-auth" in link
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert option(link, flag) is not None
    assert services["superlink"]["ports"] == ["127.0.0.1:8000:8000"]  # loopback on the host
    secrets = {
        name: [src for src in emu.mounts(name).values() if src.name == SECRET_CONTEXT_FILE]
        for name in services
    }
    holders = sorted(name for name, found in secrets.items() if found)
    assert holders == [f"superexec-clientapp-{i}" for i in range(3)]
    for i in range(3):
        assert secrets[f"superexec-clientapp-{i}"] == [Path(f"/deploy/node-{i}/secret.ctx")]
    for name in ("superlink", "superexec-serverapp"):
        assert not any(src.suffix in (".ctx", ".key") and src.name != "server.key"
                       for src in emu.mounts(name).values())  # fmt: skip
    assert emu.host_path("superexec-serverapp", "/app/run") == Path("/deploy/server/run")
    partitions = []
    for i in range(3):
        cmd = [str(a) for a in services[f"supernode-{i}"]["command"]]
        assert "--insecure" not in cmd
        key = option(cmd, "--auth-supernode-private-key")
        assert emu.host_path(f"supernode-{i}", key) == Path(f"/deploy/node-{i}/auth.key")
        config = node_config(option(cmd, "--node-config"))
        partitions.append(int(config["partition-id"]))
        assert config["num-partitions"] == "3"
        app = emu.clientapp_of(f"supernode-{i}")
        assert emu.host_path(app, config["secret-context"].strip('"')) == Path(
            f"/deploy/node-{i}/secret.ctx"
        )
        assert emu.host_path(app, config["state-dir"].strip('"')) == Path(f"/deploy/node-{i}/state")
        # the device's Runtime API is on its own internal network
        assert services[app]["networks"] == [f"device-{i}"]
        assert compose["networks"][f"device-{i}"] == {"internal": True}
    assert partitions == [0, 1, 2]


# ---- the emulation (slow) ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flower-superlink", path=str(BIN)) is None, reason="no Flower")
def test_compose_services_run_as_local_processes(tmp_path):
    deploy_dir = tmp_path / "compose"
    r = subprocess.run(
        [sys.executable, "-m", "experiments.deploy", "provision_only=true", "clients=3",
         "rounds=1", *TINY, f"hydra.run.dir={deploy_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["provisioned"] == str(deploy_dir)
    layout = Layout(deploy_dir)
    operator = tomllib.loads((layout.operator / "flwr-home" / "config.toml").read_text())
    assert operator["superlink"]["keco-deploy"]["address"] == "127.0.0.1:8000"

    emu = Emulation(load_compose({"DEPLOY_DIR": str(deploy_dir)}), ROOT)
    homes = tmp_path / "containers"  # each container's private filesystem
    with Processes(tmp_path / "logs") as procs:
        started = {}
        order = emu.order()
        for name in order:
            home = homes / name
            home.mkdir(parents=True)
            started[name] = procs.start(
                name, emu.argv(name), env=base_env(home / "flwr-home"), cwd=home,
                log=tmp_path / "logs" / f"{name}.log",
            )  # fmt: skip
            if name == "superlink":
                port = emu.port("superlink", 8000)  # what the host publishes as 8000
                wait_for(
                    "the SuperLink",
                    lambda port=port: superlink_ready(port, layout.operator / "ca.crt"),
                    120, watch=[started[name]],
                )  # fmt: skip
                cli = FlwrCli(
                    tmp_path / "operator", f"127.0.0.1:{port}", layout.operator / "ca.crt"
                )
                for i in range(3):  # the operator registers the SuperNodes (compose step 3)
                    cli.register(layout.node(i) / "auth.key.pub")
        wait_for("3 SuperNodes online", lambda: cli.online() == 3, 120,
                 watch=list(started.values()), interval_s=2)  # fmt: skip

        given = tomllib.loads((layout.operator / "run-config.compose.toml").read_text())
        assert given["run-dir"] == "/app/run"
        run_dir = emu.host_path("superexec-serverapp", given["run-dir"])
        assert run_dir == layout.server_run
        run_config = write_run_config(
            tmp_path / "run-config.toml", {"overrides": given["overrides"], "run-dir": str(run_dir)}
        )
        run_id = cli.run(ROOT, run_config)
        status = cli.wait(run_id, timeout_s=1200, poll_s=5)
        assert status == "finished:completed", cli.logs(run_id)[-3000:]
    assert procs.alive_groups() == []

    history = json.loads((run_dir / "server.json").read_text())["rounds"]
    assert [row["round"] for row in history] == [1]
    assert history[0]["set_x"] == 3 and history[0]["clients_replied"] == 3
    for i in range(3):  # every device kept its state in its own mounted folder
        assert list((layout.node(i) / "state").glob(f"client-{i}-r1.npz"))
    # the key owner decrypts the global student the ServerApp could only add up
    import shlex

    cfg = app_config(shlex.split(given["overrides"]), run_dir)
    policies = evaluate_as_owner(layout, cfg, 3)
    assert policies["student"]["params"] > 0 and policies["student"]["tasks"] > 0
    env_homes = [p for p in os.listdir(homes)]
    assert sorted(env_homes) == sorted(emu.services)

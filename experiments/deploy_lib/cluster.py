"""The parties of a deployment, their files, and the Flower processes that run them.

One directory per party, as if each were its own machine (``Layout``)::

    operator/   ca.crt ca.key server.pem server.key, flwr-home/ (the flwr CLI), run-config.toml
    owner/      secret.ctx public.ctx keys.json teacher.pt     (the CKKS key owner)
    superlink/  ca.crt server.pem server.key, state.db, flwr-home/  (no CKKS file at all)
    server/     ca.crt, run/ (public.ctx keys.json teacher.pt provisioned.json, then the
                checkpoint and server.json), flwr-home/         (SuperExec + ServerApp)
    node-<i>/   ca.crt auth.key auth.key.pub secret.ctx teacher.pt state/ flwr-home/
                                                                (SuperNode + SuperExec + ClientApp)

The processes follow Flower's docker-compose layout with process isolation: one SuperLink, one
SuperExec that runs the ServerApp, and per device a SuperNode plus a SuperExec that runs its
ClientApp. All bind to loopback on ports chosen at start.
"""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from common.crypto import SECRET_CONTEXT_FILE
from common.fed.prepare import TEACHER_FILE, provision_deployment
from common.fed.settings import FederatedRunConfig
from experiments.deploy_lib.cli import FlwrCli, base_env
from experiments.deploy_lib.pki import DEFAULT_SERVER_NAMES, make_auth_keypair, make_tls
from experiments.deploy_lib.procs import Proc, Processes, free_port, wait_for

HOST = "127.0.0.1"
AUTH_KEY = "auth.key"


@dataclass(frozen=True)
class Layout:
    """Where each party's files live under one deployment directory."""

    root: Path

    @property
    def operator(self) -> Path:
        return self.root / "operator"

    @property
    def owner(self) -> Path:
        return self.root / "owner"

    @property
    def superlink(self) -> Path:
        return self.root / "superlink"

    @property
    def server(self) -> Path:
        return self.root / "server"

    @property
    def server_run(self) -> Path:
        """The ServerApp's run directory (``run-dir`` of the run config)."""
        return self.server / "run"

    def node(self, i: int) -> Path:
        return self.root / f"node-{i}"

    def server_side(self) -> list[Path]:
        """Directories of the parties that must never see the CKKS secret key."""
        return [self.superlink, self.server]


def provision(
    layout: Layout,
    cfg: FederatedRunConfig,
    clients: int,
    tls: bool,
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
) -> dict[str, list[str]]:
    """Certificates, SuperNode key pairs, CKKS keys and teacher, split between the parties.

    ``cfg`` is the app's config; the keys and teacher are made in ``layout.owner``.
    """
    nodes = [layout.node(i) for i in range(clients)]
    for d in (layout.operator, layout.owner, layout.superlink, layout.server_run, *nodes):
        d.mkdir(parents=True, exist_ok=True)
    if tls:
        files = make_tls(layout.operator, server_names)
        for party in (layout.superlink, layout.server, *nodes):
            shutil.copyfile(files.ca_cert, party / "ca.crt")
        shutil.copyfile(files.server_cert, layout.superlink / "server.pem")
        shutil.copyfile(files.server_key, layout.superlink / "server.key")
        (layout.superlink / "server.key").chmod(0o600)
    for i in range(clients):
        (layout.node(i) / "state").mkdir(parents=True, exist_ok=True)
        make_auth_keypair(layout.node(i) / AUTH_KEY)
    owner_cfg = replace(cfg, client_dir=str(layout.owner))
    given = provision_deployment(owner_cfg, layout.server_run, nodes)
    (layout.root / "parties.json").write_text(json.dumps(given, indent=1) + "\n")
    return given


def node_config(layout: Layout, i: int, clients: int, fault_at_round: int | None = None) -> str:
    """The ``--node-config`` of SuperNode ``i``: partition, state dir and provisioned files
    (and the round its ClientApp is to raise in, for fault injection)."""
    node = layout.node(i)
    parts = [f"partition-id={i}", f"num-partitions={clients}"]
    if fault_at_round is not None:
        parts.append(f"fault-at-round={fault_at_round}")
    parts.append(f"state-dir={json.dumps(str(node / 'state'))}")
    if (node / SECRET_CONTEXT_FILE).exists():
        parts.append(f"secret-context={json.dumps(str(node / SECRET_CONTEXT_FILE))}")
    if (node / TEACHER_FILE).exists():
        parts.append(f"teacher={json.dumps(str(node / TEACHER_FILE))}")
    return " ".join(parts)


def superlink_ready(port: int, ca_cert: Path | None) -> bool:
    """Whether the SuperLink answers ``/health`` (over TLS, verified with ``ca_cert``)."""
    scheme = "http" if ca_cert is None else "https"
    verify: ssl.SSLContext | bool = False
    if ca_cert is not None:
        verify = ssl.create_default_context(cafile=str(ca_cert))
    try:
        return httpx.get(f"{scheme}://{HOST}:{port}/health", verify=verify, timeout=2).is_success
    except httpx.HTTPError:
        return False


class Cluster:
    """Start the SuperLink, the SuperExecs and the SuperNodes of one deployment."""

    def __init__(
        self, layout: Layout, procs: Processes, *, clients: int, tls: bool, auth: bool
    ) -> None:
        if auth and not tls:
            raise ValueError("SuperNode authentication needs TLS (Flower refuses it otherwise)")
        self.layout, self.procs = layout, procs
        self.clients, self.tls, self.auth = clients, tls, auth
        self.port = free_port(HOST)
        self.node_ports: dict[int, int] = {}
        self.client_faults: dict[int, int] = {}
        """Device -> the round its ClientApp raises in (node config ``fault-at-round``)."""
        ca = layout.operator / "ca.crt" if tls else None
        self.cli = FlwrCli(layout.operator / "flwr-home", f"{HOST}:{self.port}", ca)

    # ---- commands (the same executables and flags as docker-compose.yml) ------------------
    def superlink_argv(self) -> list[str]:
        sl = self.layout.superlink
        argv = ["flower-superlink"]
        if self.tls:
            argv += ["--ssl-ca-certfile", str(sl / "ca.crt"), "--ssl-certfile",
                     str(sl / "server.pem"), "--ssl-keyfile", str(sl / "server.key")]  # fmt: skip
        else:
            argv += ["--insecure"]
        if self.auth:
            argv += ["--enable-supernode-auth"]
        argv += ["--isolation", "process", "--host", HOST, "--port", str(self.port),
                 "--database", str(self.database),
                 "--disable-runtime-dependency-installation"]  # fmt: skip
        return argv

    @property
    def database(self) -> Path:
        """The SuperLink's state (runs, messages, registered nodes): a restart keeps it."""
        return self.layout.superlink / "state.db"

    def server_superexec_argv(self) -> list[str]:
        tls = ["--root-certificates", str(self.layout.server / "ca.crt")] if self.tls else []
        return ["flower-superexec", *(tls or ["--insecure"]),
                "--runtime-api-address", f"{HOST}:{self.port}"]  # fmt: skip

    def supernode_argv(
        self, i: int, *, port: int, insecure: bool = False, auth_key: Path | None = None
    ) -> list[str]:
        node = self.layout.node(i)
        argv = ["flower-supernode"]
        if insecure or not self.tls:
            argv += ["--insecure"]
        else:
            argv += ["--root-certificates", str(node / "ca.crt")]
            if auth_key is not None:
                argv += ["--auth-supernode-private-key", str(auth_key)]
        argv += ["--superlink", f"{HOST}:{self.port}", "--isolation", "process",
                 "--host", HOST, "--port", str(port),
                 "--node-config",
                 node_config(self.layout, i, self.clients, self.client_faults.get(i))]  # fmt: skip
        return argv

    @staticmethod
    def client_superexec_argv(port: int) -> list[str]:
        # the SuperNode's Runtime API is bound to loopback on the device itself
        return ["flower-superexec", "--insecure", "--runtime-api-address", f"{HOST}:{port}"]

    # ---- starting ---------------------------------------------------------------------------
    def _start(self, name: str, argv: list[str], home: Path, log: Path) -> Proc:
        return self.procs.start(name, argv, env=base_env(home), cwd=home.parent, log=log)

    def start_superlink(self, timeout_s: float) -> Proc:
        sl = self.layout.superlink
        proc = self._start(
            "superlink", self.superlink_argv(), sl / "flwr-home", sl / "superlink.log"
        )
        ca = self.layout.operator / "ca.crt" if self.tls else None
        wait_for("the SuperLink", lambda: superlink_ready(self.port, ca), timeout_s, watch=[proc])
        return proc

    def restart_superlink(self, timeout_s: float) -> Proc:
        """SIGKILL the SuperLink (a crash, not a shutdown) and start it again on the same port
        and database; waits until it answers."""
        self.procs.kill("superlink")
        return self.start_superlink(timeout_s)

    def start_server_superexec(self) -> Proc:
        srv = self.layout.server
        return self._start(
            "superexec-serverapp", self.server_superexec_argv(), srv / "flwr-home",
            srv / "superexec.log",
        )  # fmt: skip

    def register(self, i: int) -> int:
        """Register the public key of SuperNode ``i`` (``flwr supernode register``)."""
        return self.cli.register(self.layout.node(i) / f"{AUTH_KEY}.pub")

    def start_device(self, i: int) -> tuple[Proc, Proc]:
        """SuperNode ``i`` and the SuperExec that runs its ClientApp."""
        node = self.layout.node(i)
        port = self.node_ports.setdefault(i, free_port(HOST))
        key = node / AUTH_KEY if self.tls else None
        sn = self._start(
            f"supernode-{i}", self.supernode_argv(i, port=port, auth_key=key),
            node / "flwr-home", node / "supernode.log",
        )  # fmt: skip
        se = self._start(
            f"superexec-clientapp-{i}", self.client_superexec_argv(port), node / "flwr-home",
            node / "superexec.log",
        )  # fmt: skip
        return sn, se

    def start_all(self, timeout_s: float) -> None:
        """SuperLink, ServerApp SuperExec, registration (with auth), then every device; waits
        until all SuperNodes are online."""
        link = self.start_superlink(timeout_s)
        self.start_server_superexec()
        if self.auth:
            for i in range(self.clients):
                self.register(i)
        devices = [p for i in range(self.clients) for p in self.start_device(i)]
        wait_for(
            f"{self.clients} SuperNodes online",
            lambda: self.cli.online() >= self.clients,
            timeout_s, watch=[link, *devices], interval_s=2.0,
        )  # fmt: skip

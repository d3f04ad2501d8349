"""``python -m experiments.deploy``: real SuperLink / SuperExec / SuperNode processes on loopback.

The slow tests run the command as a subprocess (its own run directory under ``tmp_path``, each
Flower process with its own FLWR_HOME there) and then check that no process with such a
FLWR_HOME is left. The fast tests check the settings and that bad input fails before anything
starts.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import Context, RecordDict

from client.app import node_settings
from common.config import ConfigError
from common.crypto import PUBLIC_CONTEXT_FILE, SECRET_CONTEXT_FILE, make_backend
from common.fed.prepare import (
    PROVISIONED_FILE,
    TEACHER_FILE,
    prepare_run_dir,
    provision_deployment,
)
from experiments.deploy import (
    DeploySettings,
    FaultLog,
    app_config,
    app_overrides,
    fault_report,
    forwarded_overrides,
    settings_from_config,
)
from experiments.deploy_lib.cli import FlwrCli, base_env
from experiments.deploy_lib.cluster import AUTH_KEY, Cluster, Layout, provision
from experiments.deploy_lib.pki import make_auth_keypair, make_tls
from experiments.deploy_lib.procs import Proc, Processes, free_port, wait_for
from tests.flower_procs import flower_processes

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = [
    "scenario.n_devices=8", "scenario.n_slots=30", "model.hidden=[32]",
    "experiment.final_eval_episodes=5", "strategy.local.eval_episodes=1",
    # 8 devices x 30 slots give a client ~1 minibatch per epoch: 80 epochs make the two rounds'
    # ~55 steps a budget the student learns in (20 epochs: QoE 28.0 < random 30.5; 80: 34.3)
    "strategy.local.epochs=80",
]  # fmt: skip
needs_flower = pytest.mark.skipif(
    shutil.which("flower-superlink", path=str(BIN)) is None, reason="Flower CLIs not installed"
)


def deploy(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the deploy command into ``out``; returns the process and its last-line summary."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run(
        [sys.executable, "-m", "experiments.deploy", *args, *TINY, f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=1500,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert flower_processes(out) == [], "the deployment left Flower processes behind"
    return r, json.loads(r.stdout.strip().splitlines()[-1])


# ---- settings (fast) ------------------------------------------------------------------------
def test_settings_defaults_and_quorum():
    s = settings_from_config({"clients": 3, "rounds": 2, "kill_one_at_round": 1})
    assert s.quorum == 2  # the server must go on without the killed node
    assert DeploySettings(clients=3, rounds=2).validate().quorum == 3
    assert DeploySettings(clients=4, rounds=2, min_nodes=2).validate().quorum == 2


@pytest.mark.parametrize(
    "values, message",
    [
        ({"clients": 0}, "clients must be an integer >= 1"),
        ({"rounds": 0}, "rounds must be"),
        ({"tls": False, "auth": True}, "auth=true needs tls=true"),
        ({"rounds": 2, "kill_one_at_round": 3}, "kill_one_at_round must be in [1, rounds=2]"),
        ({"clients": 1, "kill_one_at_round": 1}, "needs clients >= 2"),
        ({"rounds": 2, "crash_server_at_round": 2}, "crash_server_at_round must be in [1"),
        ({"clients": 3, "min_nodes": 4}, "min_nodes must be in [1, clients=3]"),
        ({"clients": 3, "kill_one_at_round": 1, "min_nodes": 3}, "min_nodes must be <= 2"),
        ({"tls": "yes"}, "tls must be true or false"),
        ({"rounds": 2, "restart_superlink_at_round": 3}, "restart_superlink_at_round must be in"),
        ({"rounds": 2, "raise_in_client_at_round": 0}, "raise_in_client_at_round must be in"),
        ({"clients": 1, "raise_in_client_at_round": 1}, "needs clients >= 2"),
        ({"rejoin_after_kill": 1}, "rejoin_after_kill must be true or false"),
        (
            {"rounds": 3, "crash_server_at_round": 1, "restart_superlink_at_round": 2},
            "inject it alone",
        ),
    ],
)
def test_bad_settings_are_rejected(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        DeploySettings(**values).validate()


def _history(replied: list[int], failed: list[int]) -> list[dict]:
    return [{"round": r + 1, "clients_train": 3, "clients_replied": n, "failed": f}
            for r, (n, f) in enumerate(zip(replied, failed, strict=True))]  # fmt: skip


def test_fault_report_says_what_survived(tmp_path):
    layout = Layout(tmp_path)
    state = layout.node(2) / "state"
    state.mkdir(parents=True)
    for r in (3, 4):  # the killed device's newest states: it trained again in rounds 3 and 4
        (state / f"client-2-r{r}.npz").write_bytes(b"")
    s = DeploySettings(clients=3, rounds=4, kill_one_at_round=1, restart_superlink_at_round=2,
                       raise_in_client_at_round=3).validate()  # fmt: skip
    faults = FaultLog(
        dropouts=[{"node": "supernode-2", "partition_id": 2, "killed_at_round": 1,
                   "cause": "killed (SIGKILL) by kill_one_at_round"}],
        rejoined=[{"node": "supernode-2", "partition_id": 2, "after_round": 1}],
        superlink_restarts=[{"at_round": 2, "database": "db", "down_seconds": 1.5}],
        run_ids=[7],
    )  # fmt: skip
    report = fault_report(s, faults, _history([2, 3, 2, 3], [1, 0, 1, 0]), layout)
    assert [(f["fault"], f["round"], f["survived"]) for f in report] == [
        ("supernode_killed", 1, True), ("superlink_restarted", 2, True),
        ("clientapp_raised", 3, True),
    ]  # fmt: skip
    assert report[0]["trained_again_in_rounds"] == [3, 4] and report[2]["error_replies"] == 1
    # a missing round, a device that never trained again, a raise nobody saw: not survived
    (state / "client-2-r3.npz").unlink()
    (state / "client-2-r4.npz").unlink()
    report = fault_report(s, faults, _history([2, 3, 3], [1, 0, 0]), layout)
    assert [f["survived"] for f in report] == [False, False, False]


def test_overrides_reach_the_app_and_reserved_keys_are_refused():
    cli = ["clients=3", "tls=false", "hydra.run.dir=x", "he=off", "+scenario.seed=1"]
    assert forwarded_overrides(cli) == ["he=off", "+scenario.seed=1"]
    with pytest.raises(ConfigError, match="use rounds=<r>"):
        forwarded_overrides(["federation.rounds=4"])
    s = DeploySettings(clients=3, rounds=2, kill_one_at_round=1, app_overrides=("model=mlp",))
    ov = app_overrides(s, ["he=off"], resume=True)
    assert ov[:2] == ["model=mlp", "he=off"]
    assert ov[2:] == [
        "federation.num_clients=3", "federation.min_available_nodes=2", "federation.rounds=2",
        "experiment.resume=true",
    ]  # fmt: skip
    cfg = app_config(ov, "/tmp/server-run")
    fed = cfg.federation
    assert (fed.num_clients, fed.available, fed.rounds, cfg.resume) == (3, 2, 2, True)
    assert cfg.student.arch == "mlp" and not cfg.he.enabled


@pytest.mark.parametrize(
    "args, message",
    [
        (["clients=0"], "clients must be an integer >= 1"),
        (["rounds=2", "kill_one_at_round=5"], "kill_one_at_round must be in"),
        (["tls=false", "auth=true"], "auth=true needs tls=true"),
        (["strategy.local.epochs=-1"], "strategy.local.epochs"),
        (["federation.num_clients=5"], "use clients=<n>"),
        (["federation.min_available_nodes=1"], "use min_nodes=<m>"),
    ],
)
def test_bad_input_fails_before_any_process(tmp_path, args, message):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "experiments.deploy", *args, f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr
    # nothing was provisioned or started
    assert not any((out / d).exists() for d in ("operator", "owner", "superlink", "server"))


def test_certificates_and_supernode_keys(tmp_path):
    files = make_tls(tmp_path / "tls", ["localhost", "127.0.0.1", "superlink.example.org"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert cert.issuer == ca.subject
    ca.public_key().verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "superlink.example.org"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert files.ca_key.stat().st_mode & 0o077 == 0 and files.server_key.stat().st_mode & 0o077 == 0
    private, public = make_auth_keypair(tmp_path / "node" / "auth.key")
    key = serialization.load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    pub = serialization.load_ssh_public_key(public.read_bytes())
    assert pub.public_numbers() == key.public_key().public_numbers()


def test_provisioning_splits_the_keys_and_a_provisioned_server_refuses_a_secret(tmp_path):
    owner, server, node = tmp_path / "owner", tmp_path / "server", tmp_path / "node-0"
    cfg = app_config(["he=ckks4096", "strategy.local.logits_source=student"], server)
    given = provision_deployment(cfg.at(server, owner), server, [node])
    assert given == {"server": [PUBLIC_CONTEXT_FILE, "keys.json"], "node": [SECRET_CONTEXT_FILE]}
    assert sorted(p.name for p in server.iterdir()) == sorted(
        [PUBLIC_CONTEXT_FILE, "keys.json", PROVISIONED_FILE]
    )
    assert (node / SECRET_CONTEXT_FILE).stat().st_mode & 0o077 == 0
    assert make_backend(cfg.he, node / SECRET_CONTEXT_FILE).can_decrypt
    server_cfg = cfg  # the ServerApp's config: run-dir is the provisioned directory
    prepare_run_dir(server_cfg)  # what the ServerApp does: uses the public context as it is
    assert not (server / SECRET_CONTEXT_FILE).exists()
    shutil.copyfile(node / SECRET_CONTEXT_FILE, server / SECRET_CONTEXT_FILE)
    with pytest.raises(ConfigError, match="must never hold the secret key"):
        prepare_run_dir(server_cfg)
    (server / SECRET_CONTEXT_FILE).unlink()
    (server / PUBLIC_CONTEXT_FILE).unlink()
    with pytest.raises(ConfigError, match="keys are never generated on a deployed server"):
        prepare_run_dir(server_cfg)
    assert not (server / SECRET_CONTEXT_FILE).exists()


def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


def test_client_app_reads_the_provisioned_files_from_the_node_config(tmp_path):
    cfg = app_config(["he=off"], tmp_path / "server")
    secret, teacher = tmp_path / "secret.ctx", tmp_path / "teacher.pt"
    secret.write_bytes(b"x")
    teacher.write_bytes(b"y")
    ctx = _context({"partition-id": 2, "state-dir": str(tmp_path / "s"),
                    "secret-context": str(secret), "teacher": str(teacher)})  # fmt: skip
    assert node_settings(ctx, cfg) == (2, tmp_path / "s", secret, teacher)
    # the simulation's defaults: the clients' directory beside the server's
    assert node_settings(_context({"partition-id": 0}), cfg) == (
        0, tmp_path / "server-clients" / "states", None, None,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="no such file on this SuperNode"):
        node_settings(_context({"partition-id": 0, "secret-context": "/nonexistent.ctx"}), cfg)
    with pytest.raises(ConfigError, match="has no 'partition-id'"):
        node_settings(_context({}), cfg)
    with pytest.raises(ConfigError, match="must be an integer"):
        node_settings(_context({"partition-id": "a"}), cfg)


# ---- real processes (slow) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_auth_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "tls-auth"
    r, summary = deploy(out, "clients=3", "rounds=2", "tls=true", "auth=true")
    return out, r, summary


@pytest.mark.slow
@needs_flower
def test_tls_auth_run_with_three_supernodes_beats_random(tls_auth_run):
    out, _, summary = tls_auth_run
    assert summary["tls"] and summary["auth"]
    assert summary["rounds_completed"] == 2
    assert summary["clients_per_round"] == [3, 3] and summary["dropouts"] == []
    assert summary["final_qoe"] > summary["random_qoe"] and summary["beats_random"]
    results = json.loads((out / "results.json").read_text())
    assert results["deploy"] == summary
    assert [row["round"] for row in results["rounds"]] == [1, 2]
    for row in results["rounds"]:
        assert row["set_x"] == 3 and row["failed"] == 0
        assert 3 * 100_000 < row["bytes_up"]  # CKKS ciphertexts crossed the wire
    assert results["policies"]["student"]["qoe"] == summary["final_qoe"]
    # the SuperLink really served TLS and authenticated its 3 registered SuperNodes
    log = (out / "superlink" / "superlink.log").read_text()
    assert "Uvicorn running on https://127.0.0.1:" in log
    assert log.count("[ControlServicer.RegisterNode] Created node_id=") == 3
    for i in range(3):
        node_log = (out / f"node-{i}" / "supernode.log").read_text()
        assert "SuperNode ID:" in node_log and "Sent successfully" in node_log


@pytest.mark.slow
@needs_flower
def test_server_side_holds_no_secret_context(tls_auth_run):
    out, _, summary = tls_auth_run
    layout = Layout(out)
    cfg = app_config([], layout.server_run)  # he=ckks, the default of the run
    secret = (layout.owner / SECRET_CONTEXT_FILE).read_bytes()
    assert make_backend(cfg.he, layout.owner / SECRET_CONTEXT_FILE).can_decrypt
    server_side = [p for d in layout.server_side() for p in d.rglob("*") if p.is_file()]
    assert server_side, "no server-side files?"
    contexts = [p for p in server_side if p.suffix == ".ctx"]
    assert [p.relative_to(out) for p in contexts] == [Path("server/run/public.ctx")]
    assert not make_backend(cfg.he, contexts[0]).can_decrypt
    for path in server_side:
        assert path.name != SECRET_CONTEXT_FILE
        assert path.stat().st_size != len(secret) or path.read_bytes() != secret, path
    manifest = json.loads((layout.server_run / PROVISIONED_FILE).read_text())
    assert set(manifest["files"]) == {PUBLIC_CONTEXT_FILE, "keys.json", TEACHER_FILE}
    # every SuperNode got the secret context (owner-only permissions) and its own auth key
    for i in range(3):
        node = layout.node(i)
        assert (node / SECRET_CONTEXT_FILE).read_bytes() == secret
        assert (node / SECRET_CONTEXT_FILE).stat().st_mode & 0o077 == 0
        assert (node / AUTH_KEY).read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert (node / f"{AUTH_KEY}.pub").read_text().startswith("ecdsa-sha2-nistp384 ")


@pytest.mark.slow
@needs_flower
def test_kill_rejoin_superlink_restart_and_raising_client_lose_no_round(tmp_path):
    out = tmp_path / "faults"
    _, summary = deploy(
        out, "clients=2", "rounds=3", "tls=false", "auth=false", "he=ckks4096",
        "kill_one_at_round=1", "restart_superlink_at_round=2", "raise_in_client_at_round=3",
    )  # fmt: skip
    assert summary["rounds_completed"] == 3
    assert summary["clients_sampled_per_round"][0] == 2  # round 1 still counted on the killed node
    assert summary["clients_per_round"][0] == 1  # ... but only one node replied
    assert summary["dropouts"] == [
        {"node": "supernode-1", "partition_id": 1, "killed_at_round": 1,
         "cause": "killed (SIGKILL) by kill_one_at_round"}
    ]  # fmt: skip
    faults = {f["fault"]: f for f in summary["faults"]}
    assert set(faults) == {"supernode_killed", "superlink_restarted", "clientapp_raised"}
    assert all(f["survived"] for f in faults.values()), faults
    killed = faults["supernode_killed"]
    assert killed["rejoined_after_round"] == 1 and 3 in killed["trained_again_in_rounds"]
    assert faults["superlink_restarted"]["round"] == 2
    raised = faults["clientapp_raised"]
    assert raised["round"] == 3 and raised["error_replies"] == 1 and raised["replies_used"] == 1
    rounds = json.loads((out / "results.json").read_text())["rounds"]
    assert [row["round"] for row in rounds] == [1, 2, 3]
    assert rounds[0]["failed"] == 1 and rounds[0]["set_x"] == 1  # an error reply, not a hang
    server_log = "".join(p.read_text() for p in (out / "server").glob("serverapp-*.log"))
    assert "Node Unavailable" in server_log


@pytest.mark.slow
@needs_flower
def test_serverapp_crash_resumes_from_its_checkpoint(tmp_path):
    out = tmp_path / "crash"
    _, summary = deploy(
        out, "clients=2", "rounds=2", "tls=false", "auth=false", "crash_server_at_round=1",
        "he=ckks4096",
    )  # fmt: skip
    assert summary["server_restarts"] == 1 and summary["resumed_after_round"] == 1
    assert summary["rounds_completed"] == 2 and summary["clients_per_round"] == [2, 2]
    first, second = summary["run_ids"]
    crashed = json.loads((out / "crash-checkpoint.json").read_text())
    assert crashed["round"] == 1
    history = json.loads((out / "server" / "run" / "server.json").read_text())["rounds"]
    assert [row["round"] for row in history] == [1, 2]
    # round 1 was not redone: its row (wall-clock seconds included) is the crashed run's
    assert history[0] == crashed["history"][0]
    log1 = (out / "server" / f"serverapp-{first}.log").read_text()
    log2 = (out / "server" / f"serverapp-{second}.log").read_text()
    # the ServerApp uploads its log to the SuperLink every few tenths of a second, so SIGKILL may
    # lose round 1's last lines: only their absence from round 2 on is certain
    assert "Start `flwr-serverapp` process" in log1 and "[round 2/2]" not in log1
    assert "resuming after round 1" in log2
    assert "[round 1/2]" not in log2 and "[round 2/2]" in log2


@pytest.mark.slow
@needs_flower
def test_unregistered_and_plaintext_supernodes_are_refused(tmp_path):
    layout = Layout(tmp_path / "refuse")
    cfg = app_config(["he=off", "strategy.local.logits_source=student"], layout.server_run)
    provision(layout, cfg, clients=2, tls=True)
    with Processes(layout.root / "logs") as procs:
        cluster = Cluster(layout, procs, clients=2, tls=True, auth=True)
        link = cluster.start_superlink(timeout_s=60)
        registered = cluster.register(0)  # node 1's key is never registered
        node = layout.node

        def start(name: str, i: int, *extra: str, **kw) -> Proc:
            argv = [*cluster.supernode_argv(i, port=free_port(), **kw), *extra]
            return procs.start(name, argv, env=base_env(layout.root / name), cwd=layout.root)

        ok = start("registered", 0, auth_key=node(0) / AUTH_KEY)
        stranger = start("unregistered", 1, auth_key=node(1) / AUTH_KEY)
        plain = start("plaintext", 1, "--max-retries", "2", "--max-wait-time", "20", insecure=True)
        wait_for("the unregistered SuperNode to give up", lambda: not stranger.alive(), 60)
        assert stranger.returncode() != 0
        assert "Failed to activate SuperNode" in stranger.log_tail()
        # a plaintext SuperNode cannot talk to the TLS SuperLink
        wait_for("the plaintext SuperNode to give up", lambda: not plain.alive(), 60)
        assert plain.returncode() != 0
        assert "Failed to initialize the connection to the SuperLink" in plain.log_tail()
        wait_for("the registered SuperNode", lambda: cluster.cli.online() == 1, 60, watch=[ok])
        nodes = cluster.cli.nodes()
        assert [int(n["node-id"]) for n in nodes] == [registered]  # nobody else became a node
        assert nodes[0]["status"] == "online"
        # ... nor can a plaintext CLI or HTTP client
        plain_cli = FlwrCli(layout.root / "plain-cli", f"127.0.0.1:{cluster.port}", None)
        assert plain_cli.call("supernode", "ls", check=False)["success"] is False
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{cluster.port}/health", timeout=5)
        assert link.alive()
    assert procs.alive_groups() == []
    assert flower_processes(layout.root) == []

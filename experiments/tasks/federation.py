"""``experiment=federation``: KECO (or FedAvg) as a Flower simulation on Ray, then a report.

1. Validate the whole config (a bad value fails here, before Ray starts).
2. Prepare the run directory: CKKS keys (secret for clients, public for the server) and the
   teacher trained on public proxy episodes.
3. Run the ServerApp and the ClientApps with ``flwr.simulation.run_simulation`` on Ray; the
   server checkpoints after every round.
4. As the key owner, decrypt the final global student and evaluate it on held-out episodes
   beside the teacher, the heuristics and the oracle.
5. Write ``results.json`` (DESIGN §8), ``report.md`` and the figures; print the report path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from common.crypto import SECRET_CONTEXT_FILE, make_backend
from common.fed import (
    LocalState,
    build_student,
    distill_global,
    knowledge_shape,
    load_teacher,
)
from common.fed.prepare import TEACHER_FILE, prepare_run_dir
from common.fed.settings import PLAINTEXT_STRATEGIES, FederatedRunConfig, federated_from_dict
from common.mec import evaluate_policy, feature_scale, n_features
from common.mec.policies import make_policy
from common.models import NetPolicy, count_params, measure_latency_us
from common.progress import Progress
from common.protocol import STUDENT_KEY, GlobalSums, read_global
from experiments import tracking
from experiments.figures import write_report
from experiments.flower_patches import (
    fast_simulation_polling,
    keep_outer_ray,
    stable_simulation_node_ids,
)
from experiments.logs import route_flower_logs, setup_logging

log = logging.getLogger("keco")


def simulate(
    cfg: FederatedRunConfig, on_round: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Run the federation with Flower's Ray simulation engine; returns the per-round history.
    ``on_round(row)`` receives each round's metrics row as the round ends (tracking)."""
    from flwr.simulation import run_simulation

    from client.app import build_client_app
    from server.app import build_server_app

    route_flower_logs()  # one line per event, Flower's included
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # without an address, a local Ray of its own: ray.init() alone would attach to any cluster
    # that `ray start` left running on this machine
    init_args: dict[str, Any] = {
        "include_dashboard": False, "logging_level": "warning",
        "address": cfg.federation.ray_address or "local",
    }  # fmt: skip
    backend_config = {
        "client_resources": {"num_cpus": cfg.federation.client_cpus, "num_gpus": 0.0},
        "init_args": init_args,
    }
    # Flower's poller costs O(nodes × messages) CPU every 0.1 s; its node ids are random, which
    # would make the clients sampled under a seed differ between runs
    # inside a Ray task (Hydra's Ray launcher) the clients go on the same cluster, which stays up
    with fast_simulation_polling(), stable_simulation_node_ids(), keep_outer_ray():
        run_simulation(
            server_app=build_server_app(cfg, on_round),
            client_app=build_client_app(cfg),
            num_supernodes=cfg.federation.num_clients,
            backend_config=backend_config,
        )
    server_json = Path(cfg.run_dir) / "server.json"
    if not server_json.exists():
        raise RuntimeError(
            f"the federation did not finish (no {server_json}); see the Flower log above"
        )
    return json.loads(server_json.read_text())["rounds"]


def final_student(cfg: FederatedRunConfig) -> np.ndarray | list[np.ndarray]:
    """Decrypt (as the key owner) the final global student from the server's checkpoint.

    ``feddistill`` has no global model: it returns every client's own final student (read
    from the clients' state files, as only an experimenter with access to them can).
    """
    from server.loop import load_checkpoint

    if cfg.strategy.name == "feddistill":
        return list(client_models(cfg).values())
    ckpt = load_checkpoint(Path(cfg.run_dir))
    if ckpt is None:
        raise RuntimeError(f"no checkpoint in {cfg.run_dir}")
    arrays = {k: v.numpy() for k, v in ckpt[1].items()}
    if cfg.strategy.name in PLAINTEXT_STRATEGIES:
        return arrays[STUDENT_KEY].astype(np.float64)
    backend = make_backend(cfg.he, Path(cfg.client_dir) / SECRET_CONTEXT_FILE)
    rows, classes = knowledge_shape(cfg)
    w, g = read_global(
        backend, GlobalSums.from_arrays(arrays), count_params(build_student(cfg)), classes, rows
    )
    st = cfg.strategy
    if st.global_kd_steps and not st.server_distill:  # what the clients decide with
        w = distill_global(cfg, w, g, cfg.federation.rounds)
    return w  # the exact fixed-point sums: bit for bit what the clients load


def client_models(cfg: FederatedRunConfig) -> dict[int, np.ndarray]:
    """The newest model in each client's state file, by partition id (clients that never
    trained are skipped)."""
    state_dir = cfg.states_dir
    newest: dict[int, tuple[int, Path]] = {}
    for path in state_dir.glob("client-*-r*.npz"):
        client, _, rnd = path.stem.removeprefix("client-").rpartition("-r")
        if client.isdigit() and rnd.isdigit() and int(rnd) >= newest.get(int(client), (-1,))[0]:
            newest[int(client)] = (int(rnd), path)
    models = {}
    for pid, (_, path) in sorted(newest.items()):
        state = LocalState.load(path, cfg.scenario)
        if state.model is not None:
            models[pid] = state.model
    if not models:
        raise RuntimeError(f"no client model in {state_dir}")
    return models


def _mean_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def compare(
    cfg: FederatedRunConfig, weights: np.ndarray | list[np.ndarray]
) -> dict[str, dict[str, Any]]:
    """The final student beside the teacher, the heuristics and the oracle (same episodes).

    A list of weights (``feddistill``: one model per client) is evaluated model by model and
    the metrics averaged.
    """
    sc = cfg.scenario
    feat_scale, hist_scale = feature_scale(sc)
    episodes, seed = cfg.final_eval_episodes, cfg.eval_seed
    students = weights if isinstance(weights, list) else [weights]
    out: dict[str, dict[str, Any]] = {}
    names = [*cfg.heuristics, "oracle"]
    bar = Progress("final evaluation", len(students) + 1 + len(names), "policy", milestones=0)
    runs = []
    for w in students:
        policy = NetPolicy(build_student(cfg, w), feat_scale, hist_scale)
        runs.append(evaluate_policy(sc, policy, episodes, seed))
        bar.update(1)
    nets = {"student": build_student(cfg, students[0])}
    out["student"] = _mean_metrics(runs) if len(runs) > 1 else runs[0]
    teacher_path = Path(cfg.client_dir) / TEACHER_FILE
    if teacher_path.exists():
        nets["teacher"] = load_teacher(teacher_path, cfg.teacher, sc)
        out["teacher"] = evaluate_policy(
            sc, NetPolicy(nets["teacher"], feat_scale, hist_scale), episodes, seed
        )
    bar.update(1)
    for name, net in nets.items():
        out[name]["params"] = count_params(net)
        out[name]["infer_us"] = measure_latency_us(
            net, n_features(sc.n_edges), sc.history_slots, sc.n_edges, 300
        )
        log.info("final %-12s qoe=%.3f drop=%.4f", name, out[name]["qoe"], out[name]["drop_ratio"])
    for name in names:
        out[name] = evaluate_policy(sc, make_policy(name), episodes, seed)
        bar.update(1)
        log.info("final %-12s qoe=%.3f drop=%.4f", name, out[name]["qoe"], out[name]["drop_ratio"])
    bar.close()
    return out


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    setup_logging()
    fcfg = federated_from_dict(cfg, run_dir)  # fails here, before any work, on a bad value
    prepare_run_dir(fcfg)
    tracker = tracking.active()
    history = simulate(fcfg, on_round=tracker.log_round if tracker else None)
    policies = compare(fcfg, final_student(fcfg))
    heuristics = [h for h in fcfg.heuristics if h in policies]
    student = policies["student"]
    results = {
        "config": {
            **OmegaConf.to_container(cfg, resolve=True),
            "resolved": json.loads(json.dumps(dataclasses.asdict(fcfg), default=str)),
        },
        "rounds": history,
        "policies": policies,
        "summary": {
            "student_policy": "student",
            "final_qoe": student["qoe"],
            "first_round_qoe": history[0].get("eval_qoe") if history else None,
            "last_round_qoe": history[-1].get("eval_qoe") if history else None,
            "beats": {h: student["qoe"] > policies[h]["qoe"] for h in heuristics},
            "bytes_up_total": int(sum(r.get("bytes_up", 0) for r in history)),
            "bytes_down_total": int(sum(r.get("bytes_down", 0) for r in history)),
        },
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=float))
    report = write_report(run_dir, results, title=f"KECO federation ({fcfg.strategy.name})")
    print(f"report: {report}")
    return results

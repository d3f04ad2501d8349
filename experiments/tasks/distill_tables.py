"""``experiment=distill_tables``: KD-D3QN's Tables 1–3 with a centralised teacher and students.

1. Train the teacher (``cfg.model``; by imitation of the oracle, D3QN, or both).
2. Export the teacher's outputs on states it visits (the offline distillation dataset).
3. Table 1: one student (``student_ratio``) distilled for the largest checkpoint, evaluated at
   every checkpoint. Table 2: one student per ratio, ``distill.steps`` each. Table 3: teacher
   vs student with parameter reduction and inference-time change, plus reference rows: the
   int8 student, the same small network trained from scratch by D3QN, heuristics, the oracle.
4. Write ``results.json`` (DESIGN §8), ``tables.md`` and one CSV per table in ``run_dir``.

Every cell is mean ± std over ``eval_episodes`` evaluation episodes with the same seeds for
every policy; inference time is the batch-1, one-thread per-decision latency (median ± robust
std over ``latency_reps`` forward passes) measured in this run.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from common.config import (
    ConfigError,
    as_floats,
    as_ints,
    build,
    check_positive_int,
    finite,
    to_dict,
)
from common.mec import MECBatch, collect_dataset, feature_scale, n_features
from common.mec.policies import POLICIES, make_policy
from common.mec.scenario import ScenarioConfig, scenario_from_dict
from common.models import (
    NetPolicy,
    build_for_scenario,
    count_params,
    decision_agreement,
    model_size_bytes,
    quantize_int8,
)
from common.models.latency import latency_samples_us
from common.models.nets import MODEL_ARCHS, ModelConfig, load_model, model_from_dict
from common.training import (
    distill_student,
    evaluate_episodes,
    normalize,
    seed_everything,
    teacher_outputs,
    train_d3qn,
    train_imitation,
)
from common.training.d3qn import D3QNConfig, d3qn_from_dict
from common.training.distill_offline import DistillConfig, distill_from_dict
from common.training.imitation import ImitationConfig, imitation_from_dict

TEACHER_TRAINING = ("imitation", "d3qn", "d3qn_warm")


@dataclass(frozen=True)
class DistillTablesConfig:
    """``experiment=distill_tables``: KD-D3QN's Tables 1–3 on a centralised teacher/student."""

    task: str = "distill_tables"
    """Dispatch key of ``experiments.run``."""
    teacher_training: str = "imitation"
    """How the teacher (``cfg.model``) is trained: ``imitation`` of the oracle (DIL),
    ``d3qn`` from scratch, or ``d3qn_warm`` (D3QN fine-tuning of the imitation teacher)."""
    student_ratio: float = 0.4
    """Ratio of the student of Tables 1 and 3 (KD-D3QN's choice)."""
    student_arch: str | None = None
    """Student architecture; ``None`` = the teacher's, scaled by the ratio."""
    ratios: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
    """Rows of Table 2."""
    distill_checkpoints: tuple[int, ...] = (500, 1000, 2000, 5000, 10000, 20000)
    """Rows of Table 1: the student of one distillation run, evaluated after these steps."""
    distill_episodes: int = 40
    """Episodes of teacher-visited states in the offline distillation dataset."""
    eval_episodes: int = 50
    """Evaluation episodes of every table cell (mean ± std over them)."""
    eval_seed: int = 10000
    """Seed of the evaluation episodes (the same for every policy)."""
    heuristics: tuple[str, ...] = ("all_local", "all_offload", "random", "greedy", "load_balance")
    """Reference rows (the oracle is always added)."""
    scratch: bool = True
    """Also train the student network from scratch with D3QN (the "without distillation" row)."""
    int8: bool = True
    """Also evaluate the int8 dynamically quantised student (DDLRO)."""
    latency_reps: int = 2000
    """Batch-1 forward passes per latency measurement (median reported)."""
    agreement_states: int = 20000
    """States on which the int8 and float students' decisions are compared."""
    imitation: ImitationConfig = field(default_factory=ImitationConfig)
    """Teacher imitation training."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Offline distillation (``steps`` is used by Table 2 and 3; Table 1 runs to the largest
    checkpoint)."""
    d3qn: D3QNConfig = field(default_factory=D3QNConfig)
    """Teacher D3QN training (``teacher_training`` = d3qn / d3qn_warm)."""
    scratch_d3qn: D3QNConfig = field(default_factory=D3QNConfig)
    """D3QN training of the student network from scratch."""

    def validate(self) -> DistillTablesConfig:
        w = "experiment"
        if self.teacher_training not in TEACHER_TRAINING:
            raise ConfigError(
                f"{w}.teacher_training must be one of {list(TEACHER_TRAINING)}, "
                f"got {self.teacher_training!r}"
            )
        if self.student_arch is not None and self.student_arch not in MODEL_ARCHS:
            raise ConfigError(
                f"{w}.student_arch must be null or one of {list(MODEL_ARCHS)}, "
                f"got {self.student_arch!r}"
            )
        if not finite(self.student_ratio) or not 0 < self.student_ratio <= 4:
            raise ConfigError(f"{w}.student_ratio must be in (0, 4], got {self.student_ratio!r}")
        if any(not 0 < r <= 4 for r in self.ratios):
            raise ConfigError(f"{w}.ratios must be in (0, 4], got {list(self.ratios)}")
        as_ints(self.distill_checkpoints, f"{w}.distill_checkpoints")
        for name in ("distill_episodes", "eval_episodes", "latency_reps", "agreement_states"):
            check_positive_int(getattr(self, name), f"{w}.{name}")
        if not isinstance(self.eval_seed, int):
            raise ConfigError(f"{w}.eval_seed must be an integer, got {self.eval_seed!r}")
        return self


def distill_tables_from_dict(raw: Any) -> DistillTablesConfig:
    """Build and validate a :class:`DistillTablesConfig` (``conf/experiment/distill_tables``)."""
    d = to_dict(raw)
    subs = {
        "imitation": imitation_from_dict(d.pop("imitation", {}), "experiment.imitation"),
        "distill": distill_from_dict(d.pop("distill", {}), "experiment.distill"),
        "d3qn": d3qn_from_dict(d.pop("d3qn", {}), "experiment.d3qn"),
        "scratch_d3qn": d3qn_from_dict(d.pop("scratch_d3qn", {}), "experiment.scratch_d3qn"),
    }
    if "ratios" in d:
        d["ratios"] = tuple(float(r) for r in as_floats(d["ratios"], "experiment.ratios"))
    if "distill_checkpoints" in d:
        d["distill_checkpoints"] = as_ints(
            d["distill_checkpoints"], "experiment.distill_checkpoints"
        )
    if "heuristics" in d:
        d["heuristics"] = tuple(str(h) for h in d["heuristics"])
    if "student_ratio" in d and finite(d["student_ratio"]):
        d["student_ratio"] = float(d["student_ratio"])
    cfg = build(DistillTablesConfig, d, "experiment")
    return dataclasses.replace(cfg, **subs).validate()


# Columns of the tables: (header, per-episode metric, decimals)
CELL_COLUMNS = (
    ("AvgDelay", "delay", 3),
    ("AvgEnergy", "energy_total", 4),
    ("AvgQoE", "qoe_episode", 1),
    ("QoE/task", "qoe", 3),
    ("Drop", "dropped", 1),
    ("DropRatio", "drop_ratio", 4),
)


class Evaluator:
    """Evaluates policies on the same episodes and keeps their metrics for results.json."""

    def __init__(self, scenario: ScenarioConfig, exp: DistillTablesConfig, log: Callable) -> None:
        self.scenario, self.exp, self.log = scenario, exp, log
        self.feat_scale, self.hist_scale = feature_scale(scenario)
        self.m = scenario.n_edges
        self.k = scenario.history_slots

    def policy(self, net: torch.nn.Module, name: str) -> NetPolicy:
        return NetPolicy(net, self.feat_scale, self.hist_scale, name)

    def cells(self, policy: Callable) -> tuple[dict[str, float], dict[str, Any]]:
        """Overall §3 metrics and ``mean``/``std`` of every table column over the episodes."""
        overall, per = evaluate_episodes(
            self.scenario, policy, self.exp.eval_episodes, self.exp.eval_seed
        )
        per["dropped"] = per["drop_ratio"] * per["tasks"]
        cells = {key: (float(per[key].mean()), float(per[key].std())) for _, key, _ in CELL_COLUMNS}
        return overall, cells

    def latency(self, net: torch.nn.Module) -> tuple[float, float]:
        """Median and robust std (IQR / 1.349) of the batch-1 one-thread forward time, µs."""
        samples = latency_samples_us(
            net, n_features(self.m), self.k, self.m, reps=self.exp.latency_reps, threads=1
        )
        q1, med, q3 = np.percentile(samples, [25, 50, 75])
        return float(med), float((q3 - q1) / 1.349)


def _student_config(teacher_cfg: ModelConfig, exp: DistillTablesConfig) -> ModelConfig:
    if exp.student_arch is None or exp.student_arch == teacher_cfg.arch:
        return teacher_cfg
    return load_model(exp.student_arch)


def _heuristic_call_us(scenario: ScenarioConfig, name: str) -> float:
    """Median time of one call of a (vectorised) heuristic deciding one slot of one episode
    (all devices at once), over the decision slots of an episode, µs."""
    sim = MECBatch(scenario, 1)
    obs = sim.reset(seed=0)
    policy = make_policy(name)
    times = []
    while not sim.done:
        start = time.perf_counter()
        actions = policy(obs, sim)
        if obs.mask.any():
            times.append(time.perf_counter() - start)
        obs, _ = sim.step(actions)
    return float(np.median(times) * 1e6)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train, distil, evaluate and write the tables; returns the results.json dict."""
    # ---- config (validated before any work) --------------------------------------------------
    scenario = scenario_from_dict(cfg.scenario)
    teacher_cfg = model_from_dict(cfg.model)
    exp = distill_tables_from_dict(cfg.experiment)
    unknown = sorted(set(exp.heuristics) - set(POLICIES))
    if unknown:
        raise ConfigError(f"experiment.heuristics: unknown {unknown}; valid are {sorted(POLICIES)}")
    student_cfg = _student_config(teacher_cfg, exp)
    seed = int(cfg.get("seed", 0))
    torch.set_num_threads(int(cfg.get("threads", 1)))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    metrics_log = (run_dir / "metrics.jsonl").open("w")

    def log(key: str, value: float, step: int) -> None:
        metrics_log.write(json.dumps({"key": key, "value": value, "step": step}) + "\n")
        metrics_log.flush()

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 2)
        print(f"[distill_tables] {name}: {timings[name]:.1f}s", flush=True)
        return time.perf_counter()

    ev = Evaluator(scenario, exp, log)
    policies: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[str, Any]] = {}

    def record(
        name: str, policy: Callable, net: torch.nn.Module | None = None, params: int | None = None
    ) -> None:
        overall, cell = ev.cells(policy)
        entry: dict[str, Any] = dict(overall)
        if net is not None:
            infer, infer_std = ev.latency(net)
            params = count_params(net) if params is None else params
            entry.update(params=params, infer_us=infer, infer_us_std=infer_std)
            entry["size_bytes"] = model_size_bytes(net)
        policies[name] = entry
        cells[name] = cell

    # ---- 1. teacher ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    seed_everything(seed)
    teacher = build_for_scenario(teacher_cfg, scenario)
    if exp.teacher_training in ("imitation", "d3qn_warm"):
        train_imitation(teacher, scenario, exp.imitation, seed, log, progress="teacher training")
    if exp.teacher_training in ("d3qn", "d3qn_warm"):
        train_d3qn(teacher, scenario, exp.d3qn, seed, log)
    t0 = lap("teacher_training", t0)

    # ---- 2. offline dataset of teacher-visited states and the teacher's outputs ---------------
    dataset = collect_dataset(
        scenario, ev.policy(teacher, "teacher"), exp.distill_episodes, seed + 7
    )
    data = normalize(dataset, scenario)
    targets = teacher_outputs(teacher, data)
    t0 = lap("distill_dataset", t0)

    # ---- 3. Table 1: one distillation run evaluated at every checkpoint -----------------------
    ratio = exp.student_ratio
    marks = sorted(set(exp.distill_checkpoints) | {exp.distill.steps})
    table1: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    seed_everything(seed + 1)
    student = build_for_scenario(student_cfg.scaled(ratio), scenario)
    losses: list[float] = []  # filled when the run ends
    lap_start = [time.perf_counter()]

    def at_checkpoint(step: int, net: torch.nn.Module) -> None:
        snapshots[step] = copy.deepcopy(net.state_dict())
        if step not in exp.distill_checkpoints:
            return
        overall, cell = ev.cells(ev.policy(net, "student"))
        table1.append({"steps": step, **cell})
        rounds.append({
            "round": len(rounds) + 1, "distill_steps": step,
            "train_loss": float(np.mean(losses[-100:])) if losses else float("nan"),
            "eval_qoe": overall["qoe"], "eval_drop_ratio": overall["drop_ratio"],
            "bytes_up": 0, "bytes_down": 0,
            "seconds": round(time.perf_counter() - lap_start[0], 2),
        })  # fmt: skip
        log("eval/student_qoe", overall["qoe"], step)

    losses += distill_student(
        student, data, targets, exp.distill, seed + 1, steps=max(marks),
        checkpoints=marks, on_checkpoint=at_checkpoint,
    )  # fmt: skip
    # the loss of each round is only known after the run: fill it from the full curve
    for row in rounds:
        step = row["distill_steps"]
        row["train_loss"] = float(np.mean(losses[max(0, step - 100) : step]))
    for rank, row in enumerate(sorted(table1, key=lambda r: -r["qoe_episode"][0]), 1):
        row["rank"] = rank
    student.load_state_dict(snapshots[exp.distill.steps])
    t0 = lap("table1_distill_steps", t0)

    # ---- 4. teacher, student, int8 student, scratch student, heuristics, oracle ---------------
    record("teacher", ev.policy(teacher, "teacher"), teacher)
    record("student", ev.policy(student, "student"), student)
    checks: dict[str, Any] = {}
    if exp.int8:
        student_int8 = quantize_int8(student)
        # packed int8 weights are not nn.Parameters: the count is the float student's, the
        # saving shows in size_bytes
        record("student_int8", ev.policy(student_int8, "student_int8"), student_int8,
               params=count_params(student))  # fmt: skip
        probe = normalize(
            collect_dataset(scenario, ev.policy(student, "student"), 10, exp.eval_seed + 1),
            scenario,
        )
        n = min(len(probe), exp.agreement_states)
        checks["int8_agreement"] = decision_agreement(
            student, student_int8, probe.features[:n], probe.history[:n]
        )
    if exp.scratch:
        seed_everything(seed + 2)
        scratch = build_for_scenario(student_cfg.scaled(ratio), scenario)
        train_d3qn(scratch, scenario, exp.scratch_d3qn, seed + 2, log)
        record("student_scratch", ev.policy(scratch, "student_scratch"), scratch)
    for name in (*exp.heuristics, "oracle"):
        record(name, make_policy(name))
        policies[name].update(params=0, infer_us=_heuristic_call_us(scenario, name))
    t0 = lap("table3_and_references", t0)

    # ---- 5. Table 2: one student per ratio ----------------------------------------------------
    table2: list[dict[str, Any]] = []
    for r in exp.ratios:
        if abs(r - ratio) < 1e-9:
            net, cell = student, cells["student"]
        else:
            seed_everything(seed + 1)
            net = build_for_scenario(student_cfg.scaled(r), scenario)
            distill_student(net, data, targets, exp.distill, seed + 1)
            cell = ev.cells(ev.policy(net, f"student_{r}"))[1]
        if net is student:  # measured once, so Tables 2 and 3 show the same number
            infer, infer_std = policies["student"]["infer_us"], policies["student"]["infer_us_std"]
        else:
            infer, infer_std = ev.latency(net)
        table2.append({"ratio": r, **cell, "params": count_params(net),
                       "infer_us": (infer, infer_std)})  # fmt: skip
    t0 = lap("table2_ratios", t0)

    # ---- 6. checks of the issue, tables, results.json ------------------------------------------
    tp, sp = policies["teacher"], policies["student"]
    heuristic_best = max(policies[h]["qoe"] for h in exp.heuristics)
    checks.update({
        "param_reduction": 1 - sp["params"] / tp["params"],
        "qoe_gap": (tp["qoe"] - sp["qoe"]) / abs(tp["qoe"]),
        "latency_ratio": sp["infer_us"] / tp["infer_us"],
        "teacher_beats_heuristics": bool(tp["qoe"] > heuristic_best),
        "best_heuristic_qoe": heuristic_best,
    })  # fmt: skip
    if "student_scratch" in policies:
        sc_ = policies["student_scratch"]
        checks["distilled_beats_scratch"] = bool(
            sp["qoe"] > sc_["qoe"] and sp["drop_ratio"] < sc_["drop_ratio"]
        )
    timings["total"] = round(time.perf_counter() - started, 2)
    tables = write_tables(run_dir, exp, table1, table2, cells, policies)
    results = {
        "config": OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg,
        "rounds": rounds,
        "policies": policies,
        "tables": tables,
        "checks": checks,
        "timings_s": timings,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
    metrics_log.close()
    print(f"[distill_tables] wrote {run_dir / 'tables.md'}", flush=True)
    return results


# ---- tables -------------------------------------------------------------------------------------
def _pm(cell: tuple[float, float], decimals: int) -> str:
    return f"{cell[0]:.{decimals}f} ± {cell[1]:.{decimals}f}"


def _cell_strings(cell: dict[str, tuple[float, float]]) -> list[str]:
    return [_pm(cell[key], d) for _, key, d in CELL_COLUMNS]


def write_tables(
    run_dir: Path,
    exp: DistillTablesConfig,
    table1: list[dict[str, Any]],
    table2: list[dict[str, Any]],
    cells: dict[str, dict[str, Any]],
    policies: dict[str, dict[str, Any]],
) -> dict[str, list[list[str]]]:
    """Write ``tables.md`` and ``table{1,2,3}.csv``; returns the tables as rows of strings."""
    metric_headers = [h for h, _, _ in CELL_COLUMNS]
    episodes = str(exp.eval_episodes)

    t1 = [["DISTILL_STEPS", "Episodes", *metric_headers, "Rank"]]
    for row in sorted(table1, key=lambda r: r["steps"]):
        t1.append([str(row["steps"]), episodes, *_cell_strings(row), str(row["rank"])])

    t2 = [["STUDENT_RATIO", "Episodes", *metric_headers, "Params", "InferTime(us)"]]
    for row in table2:
        t2.append([f"{row['ratio']:g}", episodes, *_cell_strings(row), str(row["params"]),
                   _pm(row["infer_us"], 1)])  # fmt: skip

    t3 = [["Model", "Episodes", *metric_headers, "Params", "Size(kB)", "InferTime(us)",
           "ParamReduction(%)", "InferTimeChange(%)"]]  # fmt: skip
    teacher = policies["teacher"]
    for name in ("student", "teacher", "student_int8", "student_scratch"):
        if name not in policies:
            continue
        p = policies[name]
        reduction = 100 * (1 - p["params"] / teacher["params"])
        change = 100 * (p["infer_us"] / teacher["infer_us"] - 1)
        infer = f"{p['infer_us']:.1f} ± {p['infer_us_std']:.1f}"
        t3.append([name, episodes, *_cell_strings(cells[name]), str(p["params"]),
                   f"{p['size_bytes'] / 1000:.1f}", infer, f"{reduction:.2f}",
                   f"{change:.2f}"])  # fmt: skip
    for name in (*exp.heuristics, "oracle"):
        t3.append([name, episodes, *_cell_strings(cells[name]), "—", "—", "—", "—", "—"])

    tables = {"table1": t1, "table2": t2, "table3": t3}
    for key, rows in tables.items():
        with (run_dir / f"{key}.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    titles = {
        "table1": "Table 1. Student (ratio {r}) after different numbers of distillation steps",
        "table2": "Table 2. Students at different ratios ({s} distillation steps)",
        "table3": "Table 3. Teacher vs student; int8 and from-scratch students; reference "
        "policies (heuristics and the full-information oracle)",
    }
    lines = [
        "# KD-D3QN tables (distill_tables)",
        "",
        "Cells: mean ± std over evaluation episodes. AvgDelay in slots per task, AvgEnergy in J "
        "per task, AvgQoE = QoE reward summed over an episode, QoE/task its mean per task, Drop "
        "= dropped tasks per episode. InferTime: batch-1, one-thread forward pass per decision, "
        "median ± robust std, µs. Size: serialised state_dict.",
        "",
    ]
    for key, rows in tables.items():
        lines += [
            f"## {titles[key].format(r=exp.student_ratio, s=exp.distill.steps)}",
            "",
            "| " + " | ".join(rows[0]) + " |",
            "|" + "---|" * len(rows[0]),
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]] + [""]
    (run_dir / "tables.md").write_text("\n".join(lines))
    return tables

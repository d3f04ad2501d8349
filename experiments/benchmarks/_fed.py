"""Shared harness of the whole-federation suites (``he``, ``flower``, ``scale``).

Each measured federation is a real Flower simulation on Ray (``experiments.tasks.federation``'s
``simulate``) run in a **child process** (``python -m experiments.benchmarks._fed <spec.json>``),
so that every run starts from a cold Ray and its processes end with it. The parent samples the
resident memory and CPU time of the child's whole process tree (driver, GCS, raylet, Ray
workers and any other descendant) with psutil in a background thread, and reads back the
per-round history the server wrote (``server.json``: one row per round with its wall-clock
``seconds``).

Startup work that the rounds do not include (key generation, Ray start) is reported apart. The
teacher (KECO's logits network) is trained once per bench invocation on a few proxy episodes and
copied into every run directory: its weights do not change any cost, only its architecture does.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil

from experiments.flower_patches import STOCK_POLLING_ENV, fast_simulation_polling

BENCH_OVERRIDES: tuple[str, ...] = (
    "experiment=federation",
    "strategy.local.episodes=1",
    "strategy.local.epochs=2",
    "strategy.local.buffer_size=1500",
    "strategy.local.eval_episodes=1",
    "federation.fraction_evaluate=0.1",
    "federation.timeout_s=3600",
    "experiment.teacher_training.episodes=2",
    "experiment.teacher_training.steps=50",
    "experiment.teacher_training.dagger_rounds=0",
)
"""Small local work per client (1 fresh episode, a buffer of 1,500 tasks, 2 epochs over it,
evaluation on 10 % of the clients with 1 episode) on the default scenario (``seed001``: 50
devices, 5 edge nodes), teacher (CNN) and student (MLP) of ``experiment=federation``; a suite
adds its own overrides after these."""


# ---- memory and CPU time of a process tree (psutil) ------------------------------------
def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and all its descendants now; empty once ``root`` is gone (its orphans then
    belong to init, so they are no longer found, and a reused pid is not taken for it)."""
    try:
        return [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


ROLES = ("driver", "clients", "ray")


def _role(proc: psutil.Process, root: int) -> str:
    """``driver`` (the root: server, Flower's simulation engine), ``clients`` (Ray workers
    running ClientApps) or ``ray`` (GCS, raylet, agents, monitors)."""
    if proc.pid == root:
        return "driver"
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "ray"
    if "Agent" in cmd:  # ray::DashboardAgent, ray::RuntimeEnvAgent
        return "ray"
    return "clients" if "ray::" in cmd or "default_worker.py" in cmd else "ray"


def _cpu_and_rss(proc: psutil.Process) -> tuple[float, int] | None:
    """CPU seconds (user + system) and resident bytes of ``proc``; ``None`` once it is gone."""
    try:
        cpu = proc.cpu_times()
        return cpu.user + cpu.system, proc.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _pss_bytes(proc: psutil.Process) -> int:
    """Proportional set size of ``proc`` (0 once it is gone or when it may not be read)."""
    try:
        return proc.memory_full_info().pss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


class TreeMonitor:
    """Background sampler of a process tree: peak summed RSS and PSS, CPU seconds over time,
    and the wall-clock time at which each federated round ended.

    RSS summed over processes counts shared pages (libraries, Ray's shared-memory object
    store) once per process, so it is an upper bound; PSS splits shared pages among their
    users and sums to the memory the tree really holds. CPU time is user + system time of
    every process of the tree (a process that exits keeps its last reading), which, unlike
    wall time, does not grow when other users load the machine.
    """

    def __init__(
        self,
        root: int,
        checkpoint: Path | None = None,
        interval_s: float = 0.5,
        pss_every: int = 10,
    ) -> None:
        self.root, self.checkpoint, self.interval_s = root, checkpoint, interval_s
        try:
            # kept, not looked up again: psutil then tells a reused pid from the root
            self._root: psutil.Process | None = psutil.Process(root)
        except psutil.NoSuchProcess:
            self._root = None
        self.pss_every = pss_every
        """PSS (``smaps_rollup``) costs the kernel a page-table walk: read it every n-th sample."""
        self._n = 0
        self._pss_at_rss = 0
        self.peak_rss = self.peak_pss = self.peak_processes = 0
        self.processes: dict[int, psutil.Process] = {}
        """Every process seen in the tree, by pid (psutil remembers its start time, so killing
        it later never hits a process that reused the pid)."""
        self.roles: dict[int, str] = {}
        self.samples: list[tuple[float, ...]] = []
        """(time.time(), CPU seconds of the tree so far, of which driver, clients, ray)."""
        self.round_ends: dict[int, float] = {}
        """Round number -> time.time() of its checkpoint."""
        self._cpu: dict[int, float] = {}
        self._ckpt_mtime = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def tree(self) -> list[psutil.Process]:
        """The processes of the tree now (see :func:`process_tree`)."""
        return [] if self._root is None else process_tree(self._root)

    def sample(self) -> None:
        """Read the tree once: CPU seconds, summed RSS (and PSS, see ``pss_every``), rounds."""
        procs = self.tree()
        now = time.time()
        rss = 0
        for proc in procs:
            self.processes[proc.pid] = proc
            if self.roles.get(proc.pid, "ray") == "ray":  # a worker renames itself once started
                self.roles[proc.pid] = _role(proc, self.root)
            reading = _cpu_and_rss(proc)
            if reading is not None:  # a process gone since the walk keeps its last CPU time
                self._cpu[proc.pid], proc_rss = reading
                rss += proc_rss
        by_role = self.cpu_by_role()
        self.samples.append((now, sum(by_role.values()), *(by_role[r] for r in ROLES)))
        self.peak_processes = max(self.peak_processes, len(procs))
        # PSS again every pss_every samples, or when RSS grew by 5 % since the last reading
        if self._n % self.pss_every == 0 or rss > 1.05 * self._pss_at_rss:
            self.peak_pss = max(self.peak_pss, sum(_pss_bytes(p) for p in procs))
            self._pss_at_rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        self._n += 1
        self._watch_rounds()

    def _watch_rounds(self) -> None:
        if self.checkpoint is None:
            return
        try:
            mtime = self.checkpoint.stat().st_mtime
            if mtime == self._ckpt_mtime:
                return
            state = json.loads(self.checkpoint.read_text())
        except (OSError, ValueError):
            return  # not written yet, or replaced while we read it
        self._ckpt_mtime = mtime
        self.round_ends.setdefault(int(state["round"]), mtime)

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds of the whole run per role (:func:`_role`)."""
        out = dict.fromkeys(ROLES, 0.0)
        for pid, seconds in self._cpu.items():
            out[self.roles.get(pid, "ray")] += seconds
        return out

    def cpu_at(self, when: float, role: str | None = None) -> float:
        """CPU seconds of the tree (or of one role's processes) at time ``when``, linear
        between samples."""
        col = 1 if role is None else 2 + ROLES.index(role)
        times = [s[0] for s in self.samples]
        k = bisect.bisect_left(times, when)
        if k == 0:
            return self.samples[0][col] if self.samples else 0.0
        if k == len(times):
            return self.samples[-1][col]
        (t0, c0), (t1, c1) = (
            (self.samples[k - 1][0], self.samples[k - 1][col]),
            (
                self.samples[k][0],
                self.samples[k][col],
            ),
        )
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0) if t1 > t0 else c1

    def _loop(self) -> None:
        # sample before waiting, so that even a monitor stopped at once has read the tree
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other users of the machine show here)."""
    return [round(v, 2) for v in os.getloadavg()]


# ---- one federation in a child process -------------------------------------------------
def prepare_teacher(work_dir: Path, overrides: Sequence[str]) -> Path:
    """Train the run's teacher once (a few proxy episodes) and return its file.

    Only its architecture matters for timing, so every run of the bench reuses it.
    """
    from common.config import compose
    from common.fed.prepare import ensure_teacher
    from common.fed.settings import federated_from_dict, register_schemas

    register_schemas()
    teacher_dir = work_dir / "teacher"
    teacher_dir.mkdir(parents=True, exist_ok=True)
    cfg = federated_from_dict(compose([*BENCH_OVERRIDES, *overrides, "he=off"]), teacher_dir)
    return ensure_teacher(cfg, teacher_dir)


def run_federation(
    label: str,
    overrides: Sequence[str],
    work_dir: Path,
    *,
    teacher: Path | None = None,
    stock_polling: bool = False,
    timeout_s: float = 7200.0,
) -> dict[str, Any]:
    """Run one federation (``BENCH_OVERRIDES`` + ``overrides``) in a child process.

    Returns its per-round history (``rounds``; each row gains ``cpu_seconds``, the CPU time of
    the whole process tree during the round), the wall time of the child, the startup time
    (wall time not spent in rounds: interpreter, keys, Ray start), and the peak memory of its
    whole process tree. ``stock_polling`` keeps Flower's own message polling (see
    :func:`experiments.flower_patches.fast_simulation_polling`). Raises ``RuntimeError`` with
    the child's log tail if it fails.
    """
    from common.fed.settings import default_client_dir
    from server.loop import CHECKPOINT_DIR

    run_dir = work_dir / label
    client_dir = Path(default_client_dir(run_dir))
    for d in (run_dir, client_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    if teacher is not None:
        from common.fed.prepare import TEACHER_FILE

        shutil.copyfile(teacher, client_dir / TEACHER_FILE)
    spec = {"overrides": [*BENCH_OVERRIDES, *overrides], "run_dir": str(run_dir)}
    (run_dir / "bench-spec.json").write_text(json.dumps(spec))
    log_path = run_dir / "bench.log"
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    env[STOCK_POLLING_ENV] = "1" if stock_polling else "0"
    load_before = load_average()
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.benchmarks._fed", str(run_dir / "bench-spec.json")],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        monitor = TreeMonitor(proc.pid, run_dir / CHECKPOINT_DIR / "state.json")
        try:
            with monitor:
                proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:  # timed out or interrupted: stop the whole tree
                _kill([*monitor.processes.values(), *monitor.tree()])
                proc.wait()
    wall = time.perf_counter() - start
    _kill(p for p in monitor.processes.values() if p.pid != proc.pid)  # Ray leftovers, if any
    result_path = run_dir / "bench-result.json"
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"federation {label!r} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(result_path.read_text())
    rounds = result["rounds"]
    for row in rounds:
        end = monitor.round_ends.get(int(row["round"]))
        for role in (None, *ROLES):
            key = "cpu_seconds" if role is None else f"cpu_{role}_seconds"
            row[key] = (
                None
                if end is None
                else monitor.cpu_at(end, role) - monitor.cpu_at(end - row["seconds"], role)
            )
    in_rounds = sum(r["seconds"] for r in rounds)
    return {
        "label": label,
        "overrides": list(overrides),
        "num_clients": result["num_clients"],
        "fast_polling": result["fast_polling"],
        "rounds": rounds,
        "wall_s": wall,
        "prepare_s": result["prepare_s"],
        "simulate_s": result["simulate_s"],
        "startup_s": wall - in_rounds,
        "cpu_s": monitor.samples[-1][1] if monitor.samples else None,
        "cpu_by_role_s": monitor.cpu_by_role(),
        "peak_rss_bytes": monitor.peak_rss,
        "peak_pss_bytes": monitor.peak_pss,
        "peak_processes": monitor.peak_processes,
        "load_before": load_before,
        "load_after": load_average(),
    }


def _kill(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL the given processes of this harness's child tree that are still running, largest
    pid first (descendants, usually started last, before their parents). psutil refuses a
    process whose pid now belongs to someone else (its start time differs), which is left."""
    for proc in sorted(set(procs), key=lambda p: p.pid, reverse=True):
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


# ---- what the suites compute from the histories ----------------------------------------
def steady_rounds(rounds: list[dict[str, Any]], skip: int = 1) -> list[dict[str, Any]]:
    """The rounds after the first ``skip`` (warm-up: Ray actors start and import the
    ClientApp during round 1); all rounds when there are no others."""
    return rounds[skip:] or rounds


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarize_runs(runs: Sequence[dict[str, Any]], skip: int = 1) -> dict[str, Any]:
    """Figures of one configuration over its repeated runs (medians over all steady rounds).

    ``round_s`` / ``round_cpu_s``: wall / CPU seconds of a steady round (CPU of the whole
    process tree); ``client_round_s`` / ``client_round_cpu_s``: the same per trained client;
    ``first_round_s``: round 1 (Ray actors start, import the ClientApp, load keys and teacher);
    ``startup_s``: wall time of the run outside its rounds (interpreter, keys, Ray start);
    peaks are the largest over the repeats.
    """
    steady = [r for run in runs for r in steady_rounds(run["rounds"], skip)]
    per_client = [r["seconds"] / max(1, r["clients_train"]) for r in steady]
    per_client_cpu = [
        None if r.get("cpu_seconds") is None else r["cpu_seconds"] / max(1, r["clients_train"])
        for r in steady
    ]
    return {
        "clients": runs[0]["num_clients"],
        "clients_per_round": int(_median([r["clients_train"] for r in steady]) or 0),
        "repeats": len(runs),
        "steady_rounds": len(steady),
        "round_s": _median([r["seconds"] for r in steady]),
        "round_cpu_s": _median([r.get("cpu_seconds") for r in steady]),
        **{
            f"round_cpu_{role}_s": _median([r.get(f"cpu_{role}_seconds") for r in steady])
            for role in ROLES
        },
        "client_round_s": _median(per_client),
        "client_round_cpu_s": _median(per_client_cpu),
        "first_round_s": _median([run["rounds"][0]["seconds"] for run in runs]),
        "startup_s": _median([run["startup_s"] for run in runs]),
        "bytes_up_per_round": _median([r["bytes_up"] for r in steady]),
        "bytes_up_per_client_round": _median(
            [r["bytes_up"] / max(1, r.get("clients_replied", 1)) for r in steady]
        ),
        "bytes_per_uploaded_value": _median(
            [r["bytes_up"] / r["values_up"] for r in steady if r.get("values_up")]
        ),
        "bytes_down_per_round": _median([r["bytes_down"] for r in steady]),
        "peak_rss_bytes": max(run["peak_rss_bytes"] for run in runs),
        "peak_pss_bytes": max(run["peak_pss_bytes"] for run in runs),
        "wall_s": sum(run["wall_s"] for run in runs),
        "load": [run["load_before"][0] for run in runs] + [runs[-1]["load_after"][0]],
        "round_seconds": [[r["seconds"] for r in run["rounds"]] for run in runs],
        "round_cpu_seconds": [[r.get("cpu_seconds") for r in run["rounds"]] for run in runs],
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is unknown or ``b`` is not positive."""
    return None if a is None or b is None or b <= 0 else a / b


def round_ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    """``a`` over ``b`` (two :func:`summarize_runs` results): round wall and CPU time, first
    round and bytes uploaded per round."""
    keys = {
        "round_ratio": "round_s",
        "round_cpu_ratio": "round_cpu_s",
        "first_round_ratio": "first_round_s",
        "bytes_up_ratio": "bytes_up_per_round",
    }
    return {name: ratio(a[key], b[key]) for name, key in keys.items()}


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a markdown cell (``–`` when unknown)."""
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def emit_table(title: str, table: str) -> None:
    """Print a suite's markdown table to stderr (stdout's last line stays the JSON)."""
    print(f"\n### {title}\n\n{table}\n", file=sys.stderr, flush=True)


class FedBench:
    """The federations of one suite run: a work directory, one teacher, runs in child processes.

    Arguments read from the suite's ``key=value`` args: ``overrides`` (Hydra overrides added to
    every run, after :data:`BENCH_OVERRIDES` and before the suite's own), ``work_dir`` (default:
    a temporary directory, removed afterwards unless ``keep=true``) and ``stock_polling``.
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.overrides = [str(o) for o in args.get("overrides", [])]
        self.keep = bool(args.get("keep", False)) or "work_dir" in args
        self.stock_polling = bool(args.get("stock_polling", False))
        given = args.get("work_dir")
        self.work_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="keco-bench-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._teacher: Path | None = None
        self.log: list[str] = []

    def __enter__(self) -> FedBench:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def teacher(self) -> Path:
        if self._teacher is None:
            self._teacher = prepare_teacher(self.work_dir, self.overrides)
        return self._teacher

    def run(self, label: str, overrides: Sequence[str], *, stock_polling: bool | None = None):
        """One federation with the bench, user and suite overrides (the last win)."""
        stock = self.stock_polling if stock_polling is None else stock_polling
        print(f"bench: running {label} ({' '.join(overrides)})", file=sys.stderr, flush=True)
        run = run_federation(
            label, [*self.overrides, *overrides], self.work_dir, teacher=self.teacher(),
            stock_polling=stock,
        )  # fmt: skip
        print(
            f"bench: {label}: rounds {[r['seconds'] for r in run['rounds']]} s, "
            f"startup {run['startup_s']:.1f} s, peak RSS {run['peak_rss_bytes'] / 1e9:.2f} GB, "
            f"load {run['load_before'][0]}",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        return run

    def side_by_side(
        self,
        prefix: str,
        variants: dict[str, Sequence[str]],
        clients: Sequence[int],
        rounds: int,
        repeats: int,
    ) -> dict[int, dict[str, dict[str, Any]]]:
        """``{clients: {variant: summarize_runs(...)}}``: every variant (its overrides) at each
        number of clients, all clients training, ``repeats`` runs each. The variants take turns
        in alternating order, so a drift in the machine's load hits them alike. Run labels are
        ``<prefix>-<variant>-<clients>-r<repeat>``."""
        names = list(variants)
        out: dict[int, dict[str, dict[str, Any]]] = {}
        for n in clients:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for rep in range(repeats):
                for name in names if rep % 2 == 0 else names[::-1]:
                    overrides = [
                        *variants[name],
                        f"federation.num_clients={n}",
                        f"federation.rounds={rounds}",
                        "federation.fraction_train=1.0",
                    ]
                    runs[name].append(self.run(f"{prefix}-{name}-{n}-r{rep}", overrides))
            out[n] = {name: summarize_runs(runs[name]) for name in names}
        return out

    def describe(self, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """The sizes the runs use (scenario, networks, local work), for the report."""
        from common.config import compose
        from common.fed import build_student
        from common.fed.settings import federated_from_dict, register_schemas
        from common.models import build_for_scenario, count_params

        register_schemas()
        cfg = federated_from_dict(
            compose([*BENCH_OVERRIDES, *self.overrides, *overrides]), self.work_dir
        )
        local = cfg.strategy.local
        teacher_params = count_params(build_for_scenario(cfg.teacher, cfg.scenario))
        return {
            "overrides": [*BENCH_OVERRIDES, *self.overrides],
            "scenario": cfg.scenario.name,
            "devices_per_client": cfg.scenario.n_devices,
            "edge_nodes": cfg.scenario.n_edges,
            "slots_per_episode": cfg.scenario.n_time,
            "teacher": f"{cfg.teacher.arch} ({teacher_params} params)",
            "student": f"{cfg.student.arch} ({count_params(build_student(cfg))} params)",
            "local": {
                "episodes": local.episodes,
                "epochs": local.epochs,
                "buffer_size": local.buffer_size,
                "batch_size": local.batch_size,
                "eval_episodes": local.eval_episodes,
                "logits_source": local.logits_source,
            },  # fmt: skip
            "fraction_evaluate": cfg.federation.fraction_evaluate,
            "client_cpus": cfg.federation.client_cpus,
            "cpus": os.cpu_count(),
            "fast_polling": not self.stock_polling,
        }


# ---- the child process --------------------------------------------------------------------
def _child(spec_path: str) -> None:
    t0 = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())
    from common.config import compose
    from common.fed.prepare import prepare_run_dir
    from common.fed.settings import federated_from_dict, register_schemas
    from experiments.tasks.federation import simulate

    register_schemas()
    run_dir = Path(spec["run_dir"])
    cfg = federated_from_dict(compose(spec["overrides"]), run_dir)
    prepare_run_dir(cfg)
    t1 = time.perf_counter()
    with fast_simulation_polling() as fast:
        rounds = simulate(cfg)
    t2 = time.perf_counter()
    result = {
        "rounds": rounds,
        "num_clients": cfg.federation.num_clients,
        "fast_polling": fast,
        "prepare_s": t1 - t0,
        "simulate_s": t2 - t1,
    }
    (run_dir / "bench-result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _child(sys.argv[1])

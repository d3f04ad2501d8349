"""Scale: 10, 100 and 1,000 virtual clients, 10 % of them sampled per round.

``python -m experiments.bench suite=scale [clients=[10,100,1000]] [fraction=0.1] [rounds=3]
[he=ckks] [stock_at=[]] [overrides=[...]]``

Each size is one KECO federation (Flower simulation on Ray, ``experiments.benchmarks._fed``)
with ``federation.fraction_train`` and ``fraction_evaluate`` at ``fraction``. Reported per
size: seconds per client-round (a steady round's wall time over the clients trained in it;
round 1, where the Ray actors start, and the start-up before it are reported apart), the same
in CPU seconds of the whole process tree, and the peak resident memory of the whole run (the
driver, Ray's GCS, raylet and workers: every process of the tree, sampled with psutil).
``stock_at`` lists sizes to run a second time with Flower's own message polling (before the
fix in :func:`experiments.flower_patches.fast_simulation_polling`).
"""

from __future__ import annotations

from typing import Any

from experiments.benchmarks._fed import (
    FedBench,
    emit_table,
    fmt,
    markdown_table,
    ratio,
    summarize_runs,
)

CLIENT_ROUND_RATIO_TARGET = 1.2
"""Target: s/client-round at 1,000 clients at most 1.2 × that at 100."""
PEAK_MEMORY_TARGET_BYTES = 8e9
"""Target: the whole 1,000-client run stays under 8 GB resident."""


def run(args: dict[str, Any]) -> dict[str, Any]:
    """One federation per size (and per polling mode in ``stock_at``)."""
    clients = [int(c) for c in args.get("clients", [10, 100, 1000])]
    fraction = float(args.get("fraction", 0.1))
    rounds = int(args.get("rounds", 3))
    he = str(args.get("he", "ckks"))
    stock_at = {int(c) for c in args.get("stock_at", [])}
    rows = []
    with FedBench(args) as bench:
        config = bench.describe([f"he={he}"])
        for n in clients:
            overrides = [
                f"he={he}",
                f"federation.num_clients={n}",
                f"federation.rounds={rounds}",
                f"federation.fraction_train={fraction}",
                f"federation.fraction_evaluate={fraction}",
            ]
            modes = [bench.stock_polling] + ([True] if n in stock_at else [])
            for stock in dict.fromkeys(modes):
                label = f"scale-{n}" + ("-stock" if stock else "")
                run_ = bench.run(label, overrides, stock_polling=stock)
                rows.append({"polling": "stock" if stock else "fast", **summarize_runs([run_])})
    main = [r for r in rows if r["polling"] == ("stock" if bench.stock_polling else "fast")]
    by = {r["clients"]: r for r in main}
    lines = [
        [r["clients"], r["clients_per_round"], r["polling"], fmt(r["client_round_s"]),
         fmt(r["client_round_cpu_s"]), fmt(r["round_s"], 1), fmt(r["first_round_s"], 1),
         fmt(r["startup_s"], 1), fmt(r["peak_rss_bytes"] / 1e9), fmt(r["peak_pss_bytes"] / 1e9),
         "/".join(f"{v:.1f}" for v in r["load"])]
        for r in rows
    ]  # fmt: skip
    head = [
        "clients", "per round", "polling", "s / client-round", "CPU s / client-round",
        "round s", "round 1 s", "startup s", "peak RSS GB", "peak PSS GB", "load",
    ]  # fmt: skip
    table = markdown_table(head, lines)
    emit_table("scale: virtual clients", table)
    out: dict[str, Any] = {
        "config": {**config, "rounds": rounds, "fraction": fraction, "he": he},
        "rows": rows,
        "table": table,
    }
    targets: dict[str, bool | None] = {}
    largest = max(by)
    if 100 in by and largest > 100:
        big, ref = by[largest], by[100]
        out["client_round_ratio"] = ratio(big["client_round_s"], ref["client_round_s"])
        out["client_round_cpu_ratio"] = ratio(big["client_round_cpu_s"], ref["client_round_cpu_s"])
        for key, name in (("client_round_ratio", "wall"), ("client_round_cpu_ratio", "cpu")):
            value = out[key]
            targets[f"client_round_{name}_at_{largest}_le_1.2x_at_100"] = (
                None if value is None else value <= CLIENT_ROUND_RATIO_TARGET
            )
    targets[f"peak_rss_at_{largest}_le_8GB"] = (
        by[largest]["peak_rss_bytes"] <= PEAK_MEMORY_TARGET_BYTES
    )
    out["targets_met"] = targets
    return out

"""Benchmarks: ``python -m experiments.bench suite=<name> [key=value ...]`` prints JSON.

Each suite lives in ``experiments/benchmarks/<name>.py`` and exposes ``run(args) -> dict``;
``suite=all`` (``make bench``) runs every suite. The suites:

- ``he``: a whole KECO round with CKKS vs the same round in plaintext (10 and 100 clients),
  plus the encryption micro-benchmarks;
- ``flower``: the KECO strategy with HE off vs Flower's FedAvg, identical clients and training;
- ``infer``: per-decision latency and decisions/s of the teacher, the student and the int8
  student, eager and exported to TorchScript;
- ``scale``: 10, 100 and 1,000 virtual clients, 10 % sampled per round: seconds per
  client-round and peak memory of the whole run;
- ``simulator``: simulator speed under cheap policies;
- ``gym``: the batched Gymnasium ``VectorEnv`` against ``SyncVectorEnv`` (steps per second).

Each suite prints its markdown table(s) to stderr; the last line of stdout is the JSON result.
Values are read as YAML: ``clients=[10,100]``, ``overrides=['scenario.n_devices=8']``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from typing import Any

import experiments.benchmarks as _pkg


def available_suites() -> list[str]:
    """Names of the suites (modules of ``experiments.benchmarks`` not starting with ``_``)."""
    return sorted(m.name for m in pkgutil.iter_modules(_pkg.__path__) if not m.name.startswith("_"))


def parse_args(argv: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` pairs; values are read as YAML scalars (ints, floats, lists)."""
    import yaml

    args: dict[str, Any] = {}
    for item in argv:
        if "=" not in item:
            raise SystemExit(f"bench: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        args[key] = yaml.safe_load(value)
    return args


def run_suite(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one suite with its ``key=value`` arguments."""
    suites = available_suites()
    if name not in suites:
        raise SystemExit(f"bench: unknown suite {name!r}; valid suites are {suites + ['all']}")
    module = importlib.import_module(f"experiments.benchmarks.{name}")
    return module.run(args)


def targets_table(results: dict[str, dict[str, Any]]) -> str:
    """One markdown row per target a suite checked (``targets_met``)."""
    rows = [
        f"| {suite} | {target} | {'–' if met is None else ('yes' if met else 'no')} |"
        for suite, out in results.items()
        for target, met in out.get("targets_met", {}).items()
    ]
    return "\n".join(["| suite | target | met |", "| --- | --- | --- |", *rows])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run ``suite=<name>`` (or ``all``), print the targets table to stderr and the JSON."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    suite = args.pop("suite", "all")
    names = available_suites() if suite == "all" else [suite]
    result = {name: run_suite(name, dict(args)) for name in names}
    if any("targets_met" in out for out in result.values()):
        print(f"\n### targets\n\n{targets_table(result)}\n", file=sys.stderr, flush=True)
    out = result[suite] if suite != "all" else result
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

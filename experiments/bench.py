"""Benchmarks: ``python -m experiments.bench suite=<name> [key=value ...]`` prints JSON.

Each suite lives in ``experiments/benchmarks/<name>.py`` and exposes ``run(args) -> dict``;
``suite=all`` runs every suite. The last line of stdout is the JSON result.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from typing import Any

import experiments.benchmarks as _pkg


def available_suites() -> list[str]:
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
    suites = available_suites()
    if name not in suites:
        raise SystemExit(f"bench: unknown suite {name!r}; valid suites are {suites + ['all']}")
    module = importlib.import_module(f"experiments.benchmarks.{name}")
    return module.run(args)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    suite = args.pop("suite", "all")
    names = available_suites() if suite == "all" else [suite]
    result = {name: run_suite(name, dict(args)) for name in names}
    out = result[suite] if suite != "all" else result
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

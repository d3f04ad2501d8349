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
The options are the keys of ``conf/bench/bench.yaml`` (Hydra overrides: ``clients=[10,100]``,
``overrides=['scenario.n_devices=8']``); one left null keeps the suite's own default, and an
unknown key or suite exits with code 2 (:mod:`experiments.cli`).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

import experiments.benchmarks as _pkg
from common.config import CONF_DIR, ConfigError
from experiments.cli import hydra_app


def available_suites() -> list[str]:
    """Names of the suites (modules of ``experiments.benchmarks`` not starting with ``_``)."""
    return sorted(m.name for m in pkgutil.iter_modules(_pkg.__path__) if not m.name.startswith("_"))


def suite_args(cfg: DictConfig | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The suite named by ``suite`` and the options set (the null ones keep the suite's own)."""
    raw = dict(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg)
    suite = str(raw.pop("suite", None) or "all")
    return suite, {str(k): v for k, v in raw.items() if v is not None}


def run_suite(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one suite with its ``key=value`` arguments."""
    suites = available_suites()
    if name not in suites:
        raise ConfigError(f"unknown suite {name!r}; valid suites are {suites + ['all']}")
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


@hydra_app("bench", config_dir=CONF_DIR / "bench")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Run ``suite=<name>`` (or ``all``), print the targets table to stderr and the JSON."""
    suite, args = suite_args(cfg)
    names = available_suites() if suite == "all" else [suite]
    result = {name: run_suite(name, dict(args)) for name in names}
    if any("targets_met" in out for out in result.values()):
        print(f"\n### targets\n\n{targets_table(result)}\n", file=sys.stderr, flush=True)
    out = result[suite] if suite != "all" else result
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

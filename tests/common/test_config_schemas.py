"""The settings dataclasses are the one home of the defaults of ``conf/``: each preset starts
from its owner's registered schema and carries only what differs, and the defaults reach every
composed config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from common.config import CONF_DIR, SCHEMA_GROUP, compose, defaults_of
from common.crypto.params import HEConfig, he_from_dict
from common.fed.settings import (
    FEDMETA2AG_FIELDS,
    FederationConfig,
    StrategyConfig,
    federated_from_dict,
    register_schemas,
)
from common.mec.scenario import ScenarioConfig, scenario_from_dict
from common.models.nets import ARCH_FIELDS, ModelConfig, model_from_dict

ROOT = CONF_DIR.parent
GROUPS = ("scenario", "he", "model", "federation", "strategy")
"""The groups whose presets start from a registered schema."""
COMPOSED = ("scenario", "model", "student", "he", "federation", "strategy")
"""Where those groups land in a composed config (``model@student`` is a model)."""
PRIMARY = ("config", "demo", "simulate", "deploy", "compose")
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def _presets(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _schema(name: str) -> DictConfig:
    return ConfigStore.instance().load(f"{SCHEMA_GROUP}/{name}.yaml").node


def _chain(group: str, name: str, with_self: bool = True) -> DictConfig:
    """``conf/<group>/<name>.yaml`` merged as Hydra merges it: its defaults list in order
    (registered schemas, other presets), its own values at ``_self_``."""
    own = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
    parts = []
    for entry in own.pop("defaults", []):
        if entry == "_self_":
            if with_self:
                parts.append(own)
        elif entry.startswith(f"/{SCHEMA_GROUP}/"):
            parts.append(_schema(entry.split("@")[0].split("/")[-1]))
        else:
            parts.append(_chain(group, entry))
    return OmegaConf.merge(*parts)


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, DictConfig):
        out = []
        for key in node:
            out += _leaves(node._get_node(key), f"{prefix}{key}.")
        return out
    if isinstance(node, ListConfig):
        return [(prefix[:-1], OmegaConf.to_container(node))]
    return [(prefix[:-1], node._value())]


def _same(a: Any, b: Any) -> bool:
    """Equal as written: same value and type (``3600`` is not ``3600.0`` in a dumped config)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _repeats(own: DictConfig, inherited: DictConfig) -> list[str]:
    """Keys of ``own`` whose value is the one they would have without it."""
    found = []
    for key, value in _leaves(own):
        before = OmegaConf.select(inherited, key, default="<absent>", throw_on_missing=False)
        if isinstance(before, (DictConfig, ListConfig)):
            before = OmegaConf.to_container(before)
        if _same(value, before):
            found.append(f"{key}: {value!r}")
    return found


def test_the_schemas_are_the_dataclass_defaults():
    register_schemas()
    assert OmegaConf.to_container(_schema("scenario")) == defaults_of(ScenarioConfig)
    assert OmegaConf.to_container(_schema("he")) == defaults_of(HEConfig)
    assert OmegaConf.to_container(_schema("federation")) == defaults_of(FederationConfig)
    strategy = {**_schema("strategy"), **_schema("strategy_fedmeta2ag")}
    assert OmegaConf.to_container(OmegaConf.create(strategy)) == defaults_of(StrategyConfig)
    assert set(_schema("strategy_fedmeta2ag")) == set(FEDMETA2AG_FIELDS)
    for arch, own in ARCH_FIELDS.items():
        node = OmegaConf.to_container(_schema(f"model_{arch}"))
        assert node == {**defaults_of(ModelConfig, list(node)), "arch": arch}
        assert set(node) == {"arch", "ratio", "hidden", "dueling", *own}


def test_a_repeated_value_is_found():
    inherited = compose(["experiment=federation"])
    own = OmegaConf.create({"federation": {"rounds": 10, "num_clients": 3}, "he": {"scheme": "x"}})
    assert _repeats(own, inherited) == ["federation.rounds: 10"]
    assert not _repeats(OmegaConf.create({"federation": {"timeout_s": 3600.0}}), inherited)


@pytest.mark.parametrize("preset", [f"{g}/{n}" for g in GROUPS for n in _presets(g)])
def test_a_preset_sets_only_what_differs(preset):
    """No preset repeats a value it would get anyway: for a preset that starts from the schema,
    the dataclass default; for one that starts from another preset, that preset's value (``qeco``
    sets ``energy: power``, the default, because ``tang2020`` sets ``none``)."""
    group, name = preset.split("/")
    own = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
    own.pop("defaults", None)
    assert not _repeats(own, _chain(group, name, with_self=False))


def test_every_preset_chain_starts_from_a_schema():
    for group in GROUPS:
        for name in _presets(group):
            chain, entries = name, []
            while True:
                entries = OmegaConf.load(CONF_DIR / group / f"{chain}.yaml").get("defaults", [])
                parents = [e for e in entries if e != "_self_" and not e.startswith("/")]
                if not parents:
                    break
                chain = parents[0]
            assert any(e.startswith(f"/{SCHEMA_GROUP}/") for e in entries), (group, name)


def _global_content(path: Path) -> tuple[DictConfig, list[str]]:
    """A ``_global_`` or primary config's own values and its group choices as overrides."""
    raw = OmegaConf.load(path)
    overrides = []
    for entry in raw.pop("defaults", []):
        if isinstance(entry, DictConfig):
            for key, value in entry.items():
                group = key.removeprefix("override").strip().lstrip("/")
                if "@" not in group and value is not None:
                    overrides.append(f"{group}={value}")
    return raw, overrides


@pytest.mark.parametrize(
    "path",
    [*(f"experiment/{e}.yaml" for e in EXPERIMENTS), "demo.yaml", "debug/smoke.yaml"],
)
def test_experiments_set_only_what_differs(path):
    """An experiment's (or demo's, or debug=smoke's) values of the settings groups differ from
    what the config would hold without them."""
    raw, choices = _global_content(CONF_DIR / path)
    own = OmegaConf.masked_copy(raw, [k for k in COMPOSED if k in raw])
    inherited = compose(["experiment=federation", *choices])
    assert not _repeats(own, inherited)


def _cases() -> list[tuple[str, list[str]]]:
    cases = [(name, []) for name in PRIMARY]
    for smoke in ([], ["debug=smoke"]):
        cases += [("config", [f"experiment={e}", *smoke]) for e in EXPERIMENTS]
        cases += [("config", [f"{g}={n}", *smoke]) for g in GROUPS for n in _presets(g)]
    return cases


def _expected_keys(where: str, node: DictConfig) -> list[str]:
    if where in ("model", "student"):
        return list(_schema(f"model_{node.arch}"))
    if where == "strategy":
        extra = list(FEDMETA2AG_FIELDS) if node.name == "fedmeta2ag" else []
        return [*_schema("strategy"), *extra]
    return list(_schema(where))


@pytest.mark.parametrize(("config_name", "overrides"), _cases())
def test_the_defaults_reach_every_composed_config(config_name, overrides):
    """Every field of a group's schema is in the composed config, in the schema's order (a
    smoke run may add ``strategy.meta`` after them)."""
    cfg = compose(overrides, config_name=config_name)
    for where in COMPOSED:
        if where in cfg:
            keys = _expected_keys(where, cfg[where])
            assert list(cfg[where])[: len(keys)] == keys, where


def _emptied(tmp_path: Path) -> Path:
    """A copy of conf/ whose presets hold nothing but their defaults list."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    for group in GROUPS:
        for path in (conf / group).glob("*.yaml"):
            raw = yaml.safe_load(path.read_text()) or {}
            path.write_text(yaml.safe_dump({"defaults": raw.get("defaults", ["_self_"])}))
    return conf


def test_a_key_left_out_of_a_preset_takes_the_dataclass_default(tmp_path):
    conf = _emptied(tmp_path)
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = hydra_compose("config", ["experiment=federation", "he=ckks", "model=mlp"])
        assert scenario_from_dict(cfg.scenario) == ScenarioConfig()
        assert he_from_dict(cfg.he) == HEConfig()
        assert model_from_dict(cfg.model) == ModelConfig(arch="mlp")
        fed = federated_from_dict(cfg, tmp_path / "run")
        assert fed.federation == FederationConfig() and fed.strategy == StrategyConfig()
        assert fed.student == ModelConfig(arch="mlp")
        for arch in ("cnn", "lstm_dueling"):
            cfg = hydra_compose("config", [f"model={arch}"])
            assert model_from_dict(cfg.model) == ModelConfig(arch=arch)


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def test_every_key_of_a_composed_config_is_overridden_without_a_plus():
    base = compose(["experiment=fedmeta2ag_clients", "strategy=fedmeta2ag"])
    leaves = [
        (f"{where}.{key}", value)
        for where in COMPOSED
        for key, value in _leaves(base[where])
        if not (isinstance(value, str) and "${" in value)
    ]
    again = compose(["experiment=fedmeta2ag_clients", "strategy=fedmeta2ag"] + [
        _override(key, value) for key, value in leaves
    ])  # fmt: skip
    assert OmegaConf.to_container(again) == OmegaConf.to_container(base)


def test_composing_needs_the_schemas_and_the_apps_register_them(tmp_path):
    """A fresh process: ``compose`` before registering says what to do; the federated app's
    config (``flwr run .``) registers them itself."""
    code = f"""
from common.config import ConfigError, compose
try:
    compose([])
except ConfigError as err:
    print("refused:", err)
from common.fed.settings import federated_from_run_config
cfg = federated_from_run_config({{"overrides": "he=off", "run-dir": {str(tmp_path)!r}}})
print("composed:", cfg.he.name, cfg.strategy.local.expert_mix.length)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout  # fmt: skip
    assert "refused: conf/ needs the settings' schemas" in out
    assert "register_schemas()" in out
    assert "composed: off 10" in out

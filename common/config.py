"""The config boundary: composing ``conf/``, turning raw values into typed settings, shared checks.

Each settings dataclass lives beside the code it configures (``ScenarioConfig`` in
:mod:`common.mec.scenario`, ``HEConfig`` in :mod:`common.crypto.params`, each trainer's at the top
of its trainer, the federated run's in :mod:`common.fed.settings`, a study's under
``experiments/``); each builds itself from a mapping with :func:`build` and validates with the
checks here, so every module receives typed objects, never raw config strings. Validation
happens before any work starts, and every error names the field to fix. This module imports
nothing of the project, so any layer can use it.

The dataclasses are also the one home of the defaults: each owner registers its defaults as a
Hydra config ``schema/<name>`` (:func:`register_schema`, collected by
``common.fed.settings.register_schemas``), a preset of ``conf/`` starts from it
(``- /schema/<name>@_here_`` in its defaults list) and sets only what differs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
SCHEMA_GROUP = "schema"
"""Hydra config group of the registered defaults (never a YAML directory)."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what to change."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """Accept a dict, an OmegaConf node or a dataclass and return a plain dict."""
    if cfg is None:
        return {}
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    try:  # OmegaConf is optional for callers that pass plain dicts
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"expected a mapping of config values, got {type(cfg).__name__}")


def build(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys with the list of valid ones
    and values of the wrong type (by the field's annotation) with the field's name, so that the
    checks that follow only ever see values of the declared types."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: typed(v, hints[k], f"{where}.{k}") for k, v in raw.items()})


def _describe(hint: Any) -> str:
    """A type annotation in words, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}s"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping of settings"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


def typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the annotation ``hint`` wants it (a list for a tuple, an int for a float),
    or :class:`ConfigError` naming ``name``; nested settings are checked by their own builder."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or dataclasses.is_dataclass(hint):
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return typed(value, option, name)
            except ConfigError:
                continue
    elif origin is tuple:
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            item = args[0] if args else Any
            return tuple(typed(v, item, f"{name}[{i}]") for i, v in enumerate(value))
    elif origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"{name} must be {_describe(hint)}, got {value!r}")


def finite(v: Any) -> bool:
    """A real, finite number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_positive_int(value: Any, name: str) -> None:
    """Refuse anything but an integer > 0, naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_positive(value: Any, name: str) -> None:
    """Refuse anything but a finite number > 0, naming ``name``."""
    if not finite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def check_unit(value: Any, name: str) -> None:
    """Refuse anything but a number in [0, 1], naming ``name``."""
    if not finite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")


def as_ints(value: Any, name: str, allow_empty: bool = False) -> tuple[int, ...]:
    """``value`` (an integer or a list of them) as a tuple of positive integers."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or (not value and not allow_empty)
        or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in value)
    ):
        raise ConfigError(f"{name} must be a list of positive integers, got {value!r}")
    return tuple(value)


def as_floats(value: Any, name: str) -> tuple[float, ...]:
    """``value`` (a non-empty list of finite numbers) as a tuple of floats."""
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and value
        and all(finite(v) for v in value)
    ):
        return tuple(float(v) for v in value)
    raise ConfigError(f"{name} must be a non-empty list of numbers, got {value!r}")


def _plain(value: Any) -> Any:
    """A default as a config value: tuples as lists, nested settings as mappings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def defaults_of(cls: type, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The defaults of dataclass ``cls`` as plain config values, in field order (or the order of
    ``names``, a subset of its fields): what a Hydra schema node holds."""
    found = {f.name: f for f in fields(cls)}
    out = {}
    for name in found if names is None else names:
        f = found[name]
        value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if value is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{name} has no default")
        out[name] = _plain(value)
    return out


def register_schema(name: str, node: Mapping[str, Any]) -> None:
    """Register ``node`` (plain defaults, see :func:`defaults_of`) as the Hydra config
    ``schema/<name>``; registering again replaces it.

    The node is an untyped mapping, not a typed structured config, on purpose: values reach the
    builders as written (a bad one fails there with a :class:`ConfigError` naming the field, not
    in OmegaConf), and keys behave as in a YAML file (``+key=...`` still adds one)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=SCHEMA_GROUP, name=name, node=dict(node))


def _schema_node(entry: str, path: Path) -> dict[str, Any] | None:
    """The registered node a defaults-list entry ``/schema/<name>@_here_`` names, or ``None``
    when the entry is not a schema."""
    target = entry.split("@", 1)[0].lstrip("/")
    group, _, name = target.rpartition("/")
    if group != SCHEMA_GROUP:
        return None
    from hydra.core.config_store import ConfigStore
    from hydra.plugins.config_source import ConfigLoadError
    from omegaconf import OmegaConf

    try:
        node = ConfigStore.instance().load(f"{target}.yaml").node
    except ConfigLoadError:
        raise ConfigError(
            f"{path} starts from {target}, which is not registered: call "
            f"common.fed.settings.register_schemas() (or its owner's register_*_schema()) first"
        ) from None
    return OmegaConf.to_container(node)  # type: ignore[return-value]


def _resolve_defaults(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Apply a preset's Hydra ``defaults`` list (registered schemas and other presets of the
    same group, then _self_)."""
    import yaml

    defaults = raw.pop("defaults", None) or []
    merged: dict[str, Any] = {}
    for entry in defaults:
        if entry == "_self_":
            merged.update(raw)
            continue
        node = _schema_node(entry, path)
        if node is not None:
            merged.update(node)
            continue
        parent = path.parent / f"{entry}.yaml"
        merged.update(_resolve_defaults(parent, yaml.safe_load(parent.read_text()) or {}))
    if "_self_" not in defaults:
        merged.update(raw)
    return merged


def load_preset(group: str, name: str, **overrides: Any) -> dict[str, Any]:
    """The raw values of ``conf/<group>/<name>.yaml`` (its ``defaults`` applied, the registered
    schema it starts from included) with ``overrides``, outside Hydra; an unknown preset fails
    with the list of valid ones."""
    import yaml

    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        valid = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise ConfigError(f"unknown {group} preset {name!r}; valid presets are {valid}")
    raw = _resolve_defaults(path, yaml.safe_load(path.read_text()) or {})
    raw.update(overrides)
    return raw


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> Any:
    """Compose the Hydra config of ``conf/`` with ``overrides`` (outside ``@hydra.main``).

    The presets start from the registered schemas: call ``common.fed.settings.register_schemas``
    first (this fails with a :class:`ConfigError` saying so otherwise)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    if SCHEMA_GROUP not in ConfigStore.instance().repo:
        raise ConfigError(
            "conf/ needs the settings' schemas: call common.fed.settings.register_schemas() "
            "before composing"
        )
    if GlobalHydra.instance().is_initialized():  # e.g. inside @hydra.main: keep its state
        return hydra_compose(config_name=config_name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))

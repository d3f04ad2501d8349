"""One way in: every command of ``experiments`` is a Hydra app made by :func:`hydra_app`.

``python -m experiments.<command> key=value ...`` composes the command's primary config
(``conf/<command>.yaml``; ``bench``'s is ``conf/bench/bench.yaml``) with Hydra's override
syntax, ``--help``, ``--cfg job`` and ``-m``, and runs the command's task on it. Every command
ends the same way when its configuration is wrong, before any work starts:

- an unknown key (``no_such_key=1``, ``scenario.no_such=1``): exit code 2, and stderr names the
  key and lists the valid keys at that level (and the config groups of the command);
- any other override Hydra cannot apply (an unknown preset such as ``scenario=atlantis``, a
  syntax error): exit code 2 with Hydra's own message (which lists the presets);
- a top-level value left at ``???`` (``python -m experiments.report`` without ``dir=``): exit
  code 2;
- :class:`common.config.ConfigError` raised by the task (a bad value): exit code 2 with
  ``error: <message>`` on stderr.

Hydra itself rejects an unknown key with exit code 1 while it composes the config, before the
task could catch anything; so the command line is first composed here, with the same search
path, config name and run mode as Hydra's (:func:`check_command_line`), and then handed to
Hydra. That costs one more composition (a fraction of a second) and needs some of Hydra 1.3's
``hydra._internal`` helpers (the ones ``hydra.main`` itself uses).

The decorated function takes the command-line arguments, ``main(["key=value", ...])`` (default:
``sys.argv[1:]``), runs exactly as the command line would, and returns the task's value (of the
last job, under ``-m``).
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from common.config import CONF_DIR, ConfigError

EXIT_CONFIG = 2
"""Exit code of every command whose configuration is wrong (as argparse's usage errors)."""

T = TypeVar("T")

_NOT_OVERRIDDEN = re.compile(r"Could not override '([^']+)'")


def fail(message: str) -> NoReturn:
    """End the command: ``error: <message>`` on stderr, exit code 2."""
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG)


# --------------------------------------------------------------------------------------------
# The command line, composed before Hydra runs it
# --------------------------------------------------------------------------------------------
def _hydra_message(err: BaseException) -> str:
    """Hydra's own text of a composition error (with the override or the OmegaConf error it
    comes from)."""
    text = str(err)
    override = getattr(err, "override", None)
    if override:
        text = f"cannot parse the override '{override}': {text}"
    if isinstance(err.__cause__, OmegaConfBaseException):
        text += "\n" + str(err.__cause__)
    return text


def _unknown_key(err: BaseException) -> str | None:
    """The key of an override that names no key of the config, or None for other errors."""
    match = _NOT_OVERRIDDEN.match(str(err))
    if match and isinstance(err.__cause__, (ConfigKeyError, ConfigAttributeError)):
        return match.group(1)
    return None


def _plain_key(override: str) -> str | None:
    """The key of a plain ``key=value`` override (None for ``+``, ``++``, ``~`` and flags)."""
    if override.startswith(("+", "~", "-")) or "=" not in override:
        return None
    return override.split("=", 1)[0].strip()


def valid_keys(cfg: DictConfig, key: str) -> tuple[str | None, list[str]]:
    """The deepest existing parent of ``key`` in ``cfg`` (None: the top level) and its keys.
    The top level leaves out ``hydra`` (Hydra's own settings, ``hydra.*``)."""
    parts = key.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:depth])
        node = OmegaConf.select(cfg, parent, default=None, throw_on_resolution_failure=False)
        if isinstance(node, DictConfig):
            return parent, sorted(str(k) for k in node.keys())
    return None, sorted(str(k) for k in cfg.keys() if k != "hydra")


def config_groups(cfg: DictConfig) -> list[str]:
    """The config groups chosen in ``cfg``'s defaults list (``group=option`` overrides)."""
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    if not isinstance(choices, DictConfig):
        return []
    return sorted(str(g) for g in choices.keys() if not str(g).startswith("hydra/"))


def unknown_keys_message(cfg: DictConfig, keys: Sequence[str]) -> str:
    """``unknown key 'x'`` and, per level, the valid keys (with a close match, if any)."""
    names = ", ".join(f"'{k}'" for k in keys)
    lines = [f"unknown key{'s' if len(keys) > 1 else ''} {names}"]
    listed: dict[str | None, list[str]] = {}
    for key in keys:
        parent, valid = valid_keys(cfg, key)
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
        if close:
            lines.append(f"  did you mean '{(parent + '.' if parent else '') + close[0]}'?")
        listed[parent] = valid
    for parent, valid in listed.items():
        where = f" of {parent}" if parent else ""
        lines.append(f"  valid keys{where}: {', '.join(valid)}")
    groups = config_groups(cfg)
    if groups:
        lines.append(f"  config groups (group=option): {', '.join(groups)}")
    return "\n".join(lines)


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether the dotted ``key`` is in ``cfg`` (a ``???`` value counts: it is there)."""
    parent_key, _, last = key.rpartition(".")
    parent = (
        OmegaConf.select(cfg, parent_key, default=None, throw_on_resolution_failure=False)
        if parent_key
        else cfg
    )
    return isinstance(parent, DictConfig) and last in parent.keys()


def swept_unknown_keys(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """The keys of ``-m`` sweeps (``key=a,b``) that are not in ``cfg``. Hydra composes a sweep's
    values only when it launches each job; config groups (``experiment=a,b``) are left to it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    groups = set(choices.keys()) if isinstance(choices, DictConfig) else set()
    unknown = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if not override.is_sweep_override() or override.is_add() or override.is_force_add():
            continue
        if override.is_delete() or override.package is not None or "/" in key or key in groups:
            continue
        if not _has_key(cfg, key):
            unknown.append(key)
    return unknown


def check_command_line(
    argv: Sequence[str], config_dir: Path | str, config_name: str, task: Callable[..., Any]
) -> None:
    """Compose the command line as Hydra will (same search path, config name and run mode); end
    with :func:`fail` if an override names an unknown key or cannot be applied (also under
    ``--cfg``). ``--help``, ``--info``, shell completion and errors that are not about the
    config (Hydra reports them as it always does) are left to Hydra."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
        get_args_parser,
    )
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, OverrideParseException
    from hydra.types import RunMode

    args = get_args_parser().parse_args(list(argv))  # a bad flag: argparse's usage, exit 2
    shows = args.help or args.hydra_help or args.info or args.shell_completion
    if shows or args.experimental_rerun is not None:
        return
    name = args.config_name or config_name
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task)
    search_path = create_automatic_config_search_path(
        calling_file, calling_module, args.config_path or str(config_dir)
    )
    if args.config_dir is not None:
        search_path.prepend(
            provider="command-line",
            path=f"file://{Path(args.config_dir).resolve()}",
            anchor=SearchPathQuery(provider="schema"),
        )
    if GlobalHydra.instance().is_initialized():  # inside another app: Hydra refuses anyway
        return
    overrides = list(args.overrides)
    unknown: list[str] = []
    try:
        app = Hydra.create_main_hydra2(
            task_name=detect_task_name(calling_file, calling_module), config_search_path=search_path
        )
        while True:  # drop each unknown key's override until the rest composes
            if args.cfg:  # --cfg shows the config of a single run
                mode = RunMode.RUN
            else:
                mode = RunMode.MULTIRUN if args.multirun else app.get_mode(name, overrides)
            try:
                cfg = app.compose_config(name, overrides, run_mode=mode or RunMode.RUN)
                break
            except (ConfigCompositionException, OverrideParseException) as err:
                key = _unknown_key(err)
                rest = [o for o in overrides if key is None or _plain_key(o) != key]
                if len(rest) == len(overrides):  # another error
                    if not unknown:
                        fail(_hydra_message(err))
                    overrides = []  # list the keys of the primary config
                    cfg = app.compose_config(name, overrides, run_mode=RunMode.RUN)
                    break
                unknown.append(str(key))
                overrides = rest
        if mode == RunMode.MULTIRUN:
            unknown += swept_unknown_keys(cfg, overrides)
    except Exception:  # not a config error: Hydra reports it as it always does
        return
    finally:
        GlobalHydra.instance().clear()
    if unknown:
        fail(unknown_keys_message(cfg, unknown))


# --------------------------------------------------------------------------------------------
# The apps
# --------------------------------------------------------------------------------------------
@contextmanager
def outside_hydra() -> Iterator[None]:
    """Hydra's global state put aside: :func:`common.config.compose` then composes ``conf/`` as
    outside an app (an app whose own config is elsewhere, ``bench``'s, runs its task so)."""
    from hydra.core.global_hydra import GlobalHydra

    state = GlobalHydra.instance()
    saved = state.hydra
    state.clear()
    try:
        yield
    finally:
        state.hydra = saved


@contextmanager
def _command_line(argv: Sequence[str]) -> Iterator[None]:
    """``sys.argv`` as if the program had been called with ``argv`` (Hydra reads it)."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "experiments", *argv]
    try:
        yield
    finally:
        sys.argv = saved


def hydra_app(
    config_name: str, *, config_dir: Path | str = CONF_DIR
) -> Callable[[Callable[[DictConfig], T]], Callable[..., T | None]]:
    """Make ``task(cfg)`` the command ``main(argv=None)`` on ``<config_dir>/<config_name>.yaml``
    with the ending of every command (the module docstring): an unknown key, a bad override, a
    ``???`` left or a :class:`ConfigError` exit with code 2 and a message on stderr. With a
    ``config_dir`` other than ``conf/`` the task runs :func:`outside_hydra`."""
    own_dir = Path(config_dir).resolve() != CONF_DIR
    config_dir = str(config_dir)

    def decorate(task: Callable[[DictConfig], T]) -> Callable[..., T | None]:
        returned: list[T] = []

        @functools.wraps(task)  # Hydra names the job and its log after the task's module
        def job(cfg: DictConfig) -> T:
            try:
                missing = [str(k) for k in cfg if OmegaConf.is_missing(cfg, k)]  # top level
                if missing:
                    raise ConfigError(
                        f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no value: "
                        f"add {' '.join(f'{k}=<value>' for k in missing)} to the command line"
                    )
                with outside_hydra() if own_dir else nullcontext():
                    value = task(cfg)
            except ConfigError as err:
                fail(str(err))
            returned.append(value)
            return value

        run_hydra = hydra.main(config_path=config_dir, config_name=config_name, version_base=None)(
            job
        )

        @functools.wraps(task)
        def main(argv: Sequence[str] | None = None) -> T | None:
            args = list(sys.argv[1:] if argv is None else argv)
            returned.clear()
            with _command_line(args):
                check_command_line(args, config_dir, config_name, task)
                run_hydra()
            return returned[-1] if returned else None

        return main

    return decorate

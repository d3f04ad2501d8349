"""Where code lives: the layer rules of the project, checked on the source itself.

No import cycles (imports inside functions count), no oversized module in the product packages,
``common/config.py`` only the boundary, Flower's internals patched by one module outside the
product, TenSEAL only in ``common/crypto``, no hand-written ``/proc`` parsing, and the layer order
settings → simulator → models and training → federation → server/client → experiments.
"""

from __future__ import annotations

import ast
import graphlib
import importlib.util
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "server", "client", "experiments")
PRODUCT = ("common", "server", "client")
MAX_PRODUCT_LINES = 700
MAX_CONFIG_LINES = 400
PATCH_MODULE = "experiments.flower_patches"


@cache
def modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _owner(name: str) -> str | None:
    """The project module that ``name`` (a module or a name inside one) belongs to."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def imported(name: str) -> set[str]:
    """Project modules that module ``name`` imports, anywhere in it (functions included).
    ``from package import submodule`` counts as an import of the submodule."""
    path = modules()[name]
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: None if is_package else -1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules() else base)
    return {owner for t in targets if (owner := _owner(t)) and owner != name}


def test_the_module_walk_sees_the_imports_it_must() -> None:
    # a checker that sees nothing passes vacuously: pin a few known edges, in-function included
    assert "common.mec.scenario" in imported("common.mec.sim")
    assert "common.config" in imported("common.mec.scenario")
    assert "common.crypto.ckks" in imported("common.crypto.factory")  # imported in a function
    assert len(modules()) > 80


def test_no_import_cycles() -> None:
    graph = {name: imported(name) for name in modules()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("common.config", "common.mec"),  # settings never import what they configure
        ("common.mec", "common.models"),  # the simulator below models and training
        ("common.mec", "common.training"),
        ("common.models", "common.fed"),
        ("common.training", "common.fed"),
        ("common", "server"),  # common has no Flower app code
        ("common", "client"),
        ("common", "experiments"),
        ("server", "client"),  # server and client never import each other
        ("client", "server"),
        ("server", "experiments"),
        ("client", "experiments"),
    ],
)
def test_layer_order(lower: str, upper: str) -> None:
    def inside(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    wrong = sorted(
        f"{name} imports {dep}"
        for name in modules()
        if inside(name, lower)
        for dep in imported(name)
        if inside(dep, upper)
    )
    assert not wrong, wrong


def test_product_modules_stay_small() -> None:
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in modules().items()
        if name.split(".")[0] in PRODUCT
    }
    assert not {n: s for n, s in sizes.items() if s > MAX_PRODUCT_LINES}
    assert sizes["common.config"] < MAX_CONFIG_LINES


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def _flower_patches(name: str) -> list[str]:
    """Assignments to an attribute of a Flower or Ray *module* in module ``name`` (setting a
    logger's level is configuration, replacing a module's function is a patch)."""
    tree = ast.parse(modules()[name].read_text())
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update(
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.split(".")[0] in ("flwr", "ray")
            )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            "flwr",
            "ray",
        ):
            bound.update(
                a.asname or a.name for a in node.names if _is_module(f"{node.module}.{a.name}")
            )
        elif (  # module = importlib.import_module(...): any module may be patched that way
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "attr", getattr(node.value.func, "id", None))
            == "import_module"
        ):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            root = target
            while isinstance(root, ast.Attribute):
                root = root.value
            if target is not root and isinstance(root, ast.Name) and root.id in bound:
                found.append(f"{name}:{node.lineno}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in bound
        ):
            found.append(f"{name}:{node.lineno}")
    return found


def test_flower_internals_are_patched_by_one_module_outside_the_product() -> None:
    patching = {name for name in modules() if _flower_patches(name)}
    assert patching == {PATCH_MODULE}


def test_tenseal_only_in_common_crypto() -> None:
    users = {
        name
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            (getattr(node, "module", None) or a.name).split(".")[0] == "tenseal" for a in node.names
        )
    }
    assert users and all(u.startswith("common.crypto.") for u in users), users


def test_no_hand_written_proc_parsing() -> None:
    readers = sorted(
        f"{name}:{node.lineno}"
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("/proc")
    )
    assert not readers, f"use psutil instead: {readers}"

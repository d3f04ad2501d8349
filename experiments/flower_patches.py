"""Patches of Flower's simulation internals, for the simulation driver and the benchmarks only.

The product (``common/``, ``server/``, ``client/``) runs on stock Flower. A Flower simulation
driven from here (:func:`experiments.tasks.federation.simulate`, the federation benchmarks of
:mod:`experiments.benchmarks._fed`) wraps ``flwr.simulation.run_simulation`` in three context
managers, each undone when its block ends:

* :func:`fast_simulation_polling`: message delivery to the virtual clients without Flower's
  O(nodes × messages) sweep every 0.1 s (same deliveries, far less CPU);
* :func:`stable_simulation_node_ids`: the same node ids for the virtual SuperNodes in every run,
  so that a seed samples the same clients (Flower draws them from ``os.urandom``);
* :func:`keep_outer_ray`: Flower's Ray backend leaves a Ray connection it did not open alone
  (a job of Hydra's Ray launcher).

They replace private functions of Flower 1.41 (``flwr>=1.41,<1.42``, the project's pin).
Before patching, each checks that what it replaces is still there with the parameters it
expects (:func:`require_internal`). When an internal has moved,
:func:`stable_simulation_node_ids` and :func:`keep_outer_ray` raise
:class:`FlowerInternalsError` naming the Flower version found, the internal and what to do:
going on without them would silently change results (another set of clients sampled under the
same seed) or fail a Ray task after its work is done. :func:`fast_simulation_polling` falls
back to Flower's own polling with a warning instead: that only costs CPU time, the deliveries
(and so the results) are the same.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import logging
import os
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("keco")

FLOWER_PIN = "flwr>=1.41,<1.42"
"""The Flower versions these patches are written for (``pyproject.toml``'s pin)."""
FLOWER_SERIES = (1, 41)
"""Major and minor version of :data:`FLOWER_PIN`."""
STOCK_POLLING_ENV = "KECO_STOCK_FLOWER_POLLING"
"""Set to ``1`` to keep Flower's own message polling in simulations (for benchmarks)."""
SIMULATION_NODE_ID_SEED = 20_241_124
"""Seed of the node-id sequence of simulated SuperNodes (:func:`stable_simulation_node_ids`)."""

VCE_API = "flwr.server.superlink.fleet.vce.vce_api"
IN_MEMORY_LINKSTATE = "flwr.server.superlink.linkstate.in_memory_linkstate"
RAY_BACKEND = "flwr.server.superlink.fleet.vce.backend.raybackend"


class FlowerInternalsError(RuntimeError):
    """A Flower internal that this module patches is missing or changed in the installed Flower."""


def flower_version() -> str:
    """The installed Flower's version (``unknown`` if its distribution metadata is missing)."""
    try:
        return importlib.metadata.version("flwr")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _pinned(version: str) -> bool:
    major, _, rest = version.partition(".")
    return (major, rest.partition(".")[0]) == tuple(str(v) for v in FLOWER_SERIES)


_warned_versions: set[str] = set()


def _note_version() -> None:
    """Log once per version when Flower is outside the pin (its internals checked out)."""
    version = flower_version()
    if not _pinned(version) and version not in _warned_versions:
        _warned_versions.add(version)
        log.warning(
            "Flower %s is installed; experiments/flower_patches.py is written for %s. The "
            "internals it patches are where it expects them, so it patches them anyway",
            version, FLOWER_PIN,
        )  # fmt: skip


def _internals_message(internal: str, problem: str, purpose: str) -> str:
    version = flower_version()
    return (
        f"Flower {version} is installed, but {internal}, the Flower internal that "
        f"experiments/flower_patches.py relies on to {purpose}, {problem}. The patches are "
        f"written for {FLOWER_PIN} (the project's pin): install it "
        f"(pip install '{FLOWER_PIN}'), or port experiments/flower_patches.py to Flower {version}."
    )


def require_internal(
    module: str, name: str, params: tuple[str, ...] | None = None, *, purpose: str
) -> Any:
    """``module.name`` of the installed Flower, checked to exist and, with ``params``, to take
    exactly these parameters (by name, in order). Raises :class:`FlowerInternalsError` naming the
    Flower version, the internal and what to do; ``purpose`` says what the patch is for."""
    internal = f"{module}.{name}"
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        problem = f"cannot be imported ({err})"
        raise FlowerInternalsError(_internals_message(internal, problem, purpose)) from err
    if not hasattr(mod, name):
        raise FlowerInternalsError(_internals_message(internal, "is missing", purpose))
    value = getattr(mod, name)
    if params is not None:
        target = getattr(value, "stock", value)  # already patched (nested): check what it wraps
        try:
            found = tuple(inspect.signature(target).parameters)
        except (TypeError, ValueError):
            found = None
        if found != params:
            problem = (
                f"takes the parameters {found}, not {params}"
                if found is not None
                else "is no longer a function"
            )
            raise FlowerInternalsError(_internals_message(internal, problem, purpose))
    _note_version()
    return value


# ---- message delivery to the virtual clients ------------------------------------------------
def _pending_polling(stock: Callable[..., None]) -> Callable[..., None]:
    """Flower's ``add_messages_to_queue`` without its O(nodes × messages) sweep.

    The stock loop asks the in-memory LinkState for one message per registered node every
    0.1 s, and each ask scans every stored message: with 1,000 nodes and 100 messages in flight
    one sweep costs ~0.5 s of CPU under the state's lock, so the poller alone keeps a core busy
    while the clients train. This loop first collects (in one pass) the nodes that have an
    undelivered message and asks only for those, in the stock order; the rest is unchanged.
    A LinkState of another kind keeps the stock loop.
    """

    def add_messages_to_queue(
        state: Any, queue: Any, nodes_mapping: dict[int, int], f_stop: threading.Event
    ) -> None:
        store, lock = getattr(state, "message_ins_store", None), getattr(state, "lock", None)
        if not isinstance(store, dict) or lock is None:
            stock(state, queue, nodes_mapping, f_stop)
            return
        while not f_stop.is_set():
            with lock:
                pending = {
                    m.metadata.dst_node_id for m in store.values() if m.metadata.delivered_at == ""
                }
            if pending:
                for node_id in nodes_mapping.keys():
                    if node_id in pending:
                        for msg in state.get_message_ins(node_id=node_id, limit=1):
                            queue.put(msg)
            f_stop.wait(0.1)

    add_messages_to_queue.stock = stock  # type: ignore[attr-defined]
    return add_messages_to_queue


@contextlib.contextmanager
def fast_simulation_polling() -> Iterator[bool]:
    """Within the block, Flower simulations deliver messages without the O(nodes × messages)
    sweep (:func:`_pending_polling`); yields whether the fast loop is installed (not when
    ``KECO_STOCK_FLOWER_POLLING=1``, nor, with a warning, when the installed Flower's polling
    loop is not the one it replaces). Wrap ``flwr.simulation.run_simulation`` in it."""
    if os.environ.get(STOCK_POLLING_ENV) == "1":
        yield _polling_installed()
        return
    try:
        current = require_internal(
            VCE_API, "add_messages_to_queue", ("state", "queue", "nodes_mapping", "f_stop"),
            purpose="deliver messages to the virtual clients without its O(nodes × messages) "
            "sweep",
        )  # fmt: skip
    except FlowerInternalsError as err:
        log.warning("%s Running with Flower's own message polling (slower, same results).", err)
        yield False
        return
    if hasattr(current, "stock"):  # already installed (nested): left as it is
        yield True
        return
    vce_api = importlib.import_module(VCE_API)
    vce_api.add_messages_to_queue = _pending_polling(current)
    try:
        yield True
    finally:
        vce_api.add_messages_to_queue = current


def _polling_installed() -> bool:
    """Whether the fast loop is installed now (by an enclosing :func:`fast_simulation_polling`)."""
    with contextlib.suppress(ImportError):
        vce_api = importlib.import_module(VCE_API)
        return hasattr(getattr(vce_api, "add_messages_to_queue", None), "stock")
    return False


# ---- node ids of the virtual SuperNodes -----------------------------------------------------
@contextlib.contextmanager
def stable_simulation_node_ids() -> Iterator[None]:
    """Within the block, Flower simulations give their virtual SuperNodes the same node ids in
    every run (a fixed pseudo-random sequence in registration order, i.e. by partition id).

    Flower draws node ids from ``os.urandom``; the strategies sample node ids, so with partial
    participation the same seed would otherwise train a different set of clients in every run.
    With stable ids, sampling seeded by (seed, round) picks the same partitions every time.
    Only node registration is affected (run and message ids stay random). Wrap
    ``flwr.simulation.run_simulation`` in it. Raises :class:`FlowerInternalsError` when the
    installed Flower registers nodes otherwise.
    """
    purpose = "give the virtual SuperNodes the same node ids in every run"
    register = require_internal(
        VCE_API, "_register_nodes", ("num_nodes", "state_factory"), purpose=purpose
    )
    draw = require_internal(
        IN_MEMORY_LINKSTATE, "generate_rand_int_from_bytes", ("num_bytes", "exclude"),
        purpose=purpose,
    )  # fmt: skip
    if hasattr(register, "stock"):  # already installed (nested)
        yield
        return
    vce_api = importlib.import_module(VCE_API)
    in_memory_linkstate = importlib.import_module(IN_MEMORY_LINKSTATE)

    def register_nodes(num_nodes: int, state_factory: Any) -> dict[int, int]:
        rng, registering = random.Random(SIMULATION_NODE_ID_SEED), threading.get_ident()

        def next_id(num_bytes: int, exclude: set[int] | None = None) -> int:
            if threading.get_ident() != registering:  # another thread's id: Flower's own draw
                return draw(num_bytes, exclude)
            while (node_id := rng.getrandbits(8 * num_bytes)) in (exclude or ()):
                pass
            return node_id

        in_memory_linkstate.generate_rand_int_from_bytes = next_id
        try:
            return register(num_nodes, state_factory)
        finally:
            in_memory_linkstate.generate_rand_int_from_bytes = draw

    register_nodes.stock = register  # type: ignore[attr-defined]
    vce_api._register_nodes = register_nodes
    try:
        yield
    finally:
        vce_api._register_nodes = register


# ---- an outer Ray connection ----------------------------------------------------------------
@contextlib.contextmanager
def keep_outer_ray() -> Iterator[bool]:
    """Within the block, Flower's simulation leaves a Ray connection it did not open alone.

    Flower's Ray backend calls ``ray.shutdown()`` when the simulation ends, also when Ray was
    initialised before (the simulation then runs on that cluster): inside a Ray task, e.g. a job
    of Hydra's Ray launcher, that cuts the task off from Ray and the task fails after its work
    is done. Yields whether Ray was already initialised (and is therefore kept). Raises
    :class:`FlowerInternalsError` when it is, but the installed Flower's Ray backend no longer
    reaches Ray through the ``ray`` module it would patch.
    """
    import ray

    if not ray.is_initialized():
        yield False
        return
    purpose = "leave a Ray connection it did not open alone"
    if require_internal(RAY_BACKEND, "ray", purpose=purpose) is not ray:
        problem = "is no longer the ray module (whose shutdown() this patch replaces)"
        raise FlowerInternalsError(_internals_message(f"{RAY_BACKEND}.ray", problem, purpose))
    shutdown = ray.shutdown
    ray.shutdown = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield True
    finally:
        ray.shutdown = shutdown  # type: ignore[assignment]

"""``experiments.flower_patches``: Flower's simulation message polling without the
O(nodes × messages) sweep (same deliveries as Flower's own loop), stable node ids for the
virtual SuperNodes, an outer Ray connection kept, and the check that what they patch is still
where the patches expect it in the installed Flower."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid

import pytest
from flwr.app import Message, MessageType, RecordDict
from flwr.common.constant import NOOP_FLWR_AID
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager

from experiments.flower_patches import (
    STOCK_POLLING_ENV,
    FlowerInternalsError,
    _pending_polling,
    fast_simulation_polling,
    flower_version,
    keep_outer_ray,
    stable_simulation_node_ids,
)


def _state_with_messages(nodes: int, destinations: list[int]):
    factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    mapping = vce_api._register_nodes(nodes, factory)
    state = factory.state()
    run_id = state.create_run(None, None, None, {}, NOOP_FEDERATION_ID, None, NOOP_FLWR_AID, "t")
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 1, 0
    try:
        node_ids = list(mapping)
        ids = []
        for k in destinations:
            msg = Message(RecordDict(), dst_node_id=node_ids[k], message_type=MessageType.TRAIN)
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            assert state.store_message_ins(msg)
            ids.append(msg.metadata.message_id)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    return state, mapping, ids


def _deliver(loop, state, mapping, expected: int) -> list[Message]:
    out: queue.Queue[Message] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=loop, args=(state, out, mapping, stop))
    thread.start()
    deadline = time.time() + 20
    while out.qsize() < expected and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # nothing more may arrive
    stop.set()
    thread.join()
    return [out.get() for _ in range(out.qsize())]


@pytest.mark.parametrize("loop", ["stock", "fast"])
def test_every_message_is_delivered_once(loop):
    destinations = [3, 7, 7, 0, 19, 12, 3]  # two nodes get two messages each
    state, mapping, ids = _state_with_messages(20, destinations)
    stock = vce_api.add_messages_to_queue
    fn = stock if loop == "stock" else _pending_polling(stock)
    got = _deliver(fn, state, mapping, len(ids))
    assert sorted(m.metadata.message_id for m in got) == sorted(ids)
    assert all(m.metadata.delivered_at != "" for m in got)
    # per node, messages come in the order they were stored
    node_ids = list(mapping)
    for k in set(destinations):
        want = [i for i, d in zip(ids, destinations, strict=True) if d == k]
        assert [m.metadata.message_id for m in got if m.metadata.dst_node_id == node_ids[k]] == want


def test_fast_loop_does_not_scan_idle_nodes():
    state, mapping, ids = _state_with_messages(300, list(range(0, 300, 10)))
    calls = []
    original = state.get_message_ins

    def counting(*args, **kwargs):
        calls.append(kwargs.get("node_id"))
        return original(*args, **kwargs)

    state.get_message_ins = counting
    got = _deliver(_pending_polling(vce_api.add_messages_to_queue), state, mapping, len(ids))
    assert len(got) == len(ids) == 30
    assert len(calls) == 30  # one ask per node with a message, none for the 270 idle ones


def test_context_installs_and_restores(monkeypatch):
    stock = vce_api.add_messages_to_queue
    with fast_simulation_polling() as fast:
        assert fast is True and vce_api.add_messages_to_queue is not stock
        with fast_simulation_polling() as nested:  # already installed: left as it is
            assert nested is True
        assert vce_api.add_messages_to_queue.stock is stock
    assert vce_api.add_messages_to_queue is stock
    monkeypatch.setenv(STOCK_POLLING_ENV, "1")
    with fast_simulation_polling() as fast:
        assert fast is False and vce_api.add_messages_to_queue is stock


def _register(n: int) -> dict[int, int]:
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager

    factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    return vce_api._register_nodes(num_nodes=n, state_factory=factory)


def test_simulated_supernodes_get_the_same_ids_in_every_run():
    import random

    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate import in_memory_linkstate

    register, draw = vce_api._register_nodes, in_memory_linkstate.generate_rand_int_from_bytes
    assert _register(20) != _register(20)  # Flower's ids come from os.urandom
    with stable_simulation_node_ids():
        first = _register(20)
        with stable_simulation_node_ids():  # nested: left as it is
            second = _register(20)
        assert in_memory_linkstate.generate_rand_int_from_bytes is draw  # only while registering
    assert first == second and sorted(first.values()) == list(range(20))
    assert len(set(first)) == 20 and 0 not in first
    # so a seeded sample of node ids is the same set of partitions in every run
    random.seed(7)
    picked = [first[n] for n in random.sample(list(first), 5)]
    random.seed(7)
    assert [second[n] for n in random.sample(list(second), 5)] == picked
    assert vce_api._register_nodes is register
    assert in_memory_linkstate.generate_rand_int_from_bytes is draw


def test_keep_outer_ray_keeps_an_initialised_ray(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # as inside a Ray task
    shutdown = ray.shutdown
    with keep_outer_ray() as kept:
        assert kept is True and ray.shutdown is not shutdown
        ray.shutdown()  # what Flower's Ray backend calls when the simulation ends: a no-op
    assert ray.shutdown is shutdown


# ---- the installed Flower's internals -------------------------------------------------------
def test_a_missing_internal_is_a_clear_error(monkeypatch):
    monkeypatch.delattr(vce_api, "_register_nodes")
    with pytest.raises(FlowerInternalsError) as err, stable_simulation_node_ids():
        pass
    text = str(err.value)
    assert f"Flower {flower_version()} is installed" in text
    assert "flwr.server.superlink.fleet.vce.vce_api._register_nodes" in text
    assert "is missing" in text and "pip install 'flwr>=1.41,<1.42'" in text


def test_a_changed_signature_is_a_clear_error(monkeypatch):
    from flwr.server.superlink.linkstate import in_memory_linkstate

    register = vce_api._register_nodes
    monkeypatch.setattr(in_memory_linkstate, "generate_rand_int_from_bytes", lambda size: 1)
    with pytest.raises(FlowerInternalsError) as err, stable_simulation_node_ids():
        pass
    assert "in_memory_linkstate.generate_rand_int_from_bytes" in str(err.value)
    assert "takes the parameters ('size',), not ('num_bytes', 'exclude')" in str(err.value)
    assert vce_api._register_nodes is register  # nothing was installed


def test_keep_outer_ray_refuses_a_moved_ray_backend(monkeypatch):
    import ray
    from flwr.server.superlink.fleet.vce.backend import raybackend

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.delattr(raybackend, "ray")
    shutdown = ray.shutdown
    with (
        pytest.raises(FlowerInternalsError, match=r"raybackend\.ray, .* is missing"),
        keep_outer_ray(),
    ):
        pass
    assert ray.shutdown is shutdown


def test_polling_falls_back_to_flowers_own_with_a_warning(monkeypatch, caplog):
    def changed(state, queue, nodes_mapping, f_stop, timeout=0.1) -> None:
        """A Flower whose polling loop takes another argument."""

    monkeypatch.setattr(vce_api, "add_messages_to_queue", changed)
    with caplog.at_level(logging.WARNING, logger="keco"), fast_simulation_polling() as fast:
        assert fast is False and vce_api.add_messages_to_queue is changed
    assert "vce_api.add_messages_to_queue" in caplog.text
    assert "Flower's own message polling" in caplog.text


def test_another_flower_version_with_the_same_internals_is_patched_with_a_warning(
    monkeypatch, caplog
):
    from experiments import flower_patches

    monkeypatch.setattr(flower_patches, "flower_version", lambda: "1.99.0")
    monkeypatch.setattr(flower_patches, "_warned_versions", set())
    stock = vce_api.add_messages_to_queue
    with caplog.at_level(logging.WARNING, logger="keco"), fast_simulation_polling() as fast:
        assert fast is True and vce_api.add_messages_to_queue is not stock
    assert vce_api.add_messages_to_queue is stock
    assert "Flower 1.99.0 is installed" in caplog.text and "flwr>=1.41,<1.42" in caplog.text

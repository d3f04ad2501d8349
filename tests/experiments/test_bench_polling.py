"""Flower's simulation message polling without the O(nodes × messages) sweep
(``server.loop.fast_simulation_polling``): same deliveries as Flower's own loop."""

from __future__ import annotations

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

from server.loop import STOCK_POLLING_ENV, _pending_polling, fast_simulation_polling


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

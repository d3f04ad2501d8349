"""FedMeta2Ag's local first-order MAML and meta-test adaptation (common.fed.maml)."""

import copy

import numpy as np
import pytest
import torch

from common.fed.maml import adapt, meta_train
from common.models import build_model, flatten_params, unflatten_params
from common.models.nets import ModelConfig

N_FEATURES, HISTORY, EDGES = 9, 10, 5  # the seed001 input sizes: M = 5 edge nodes
N_CLASSES = EDGES + 1
MLP = ModelConfig(arch="mlp", hidden=(32,))
META = dict(inner_steps=2, inner_lr=0.1, outer_lr=0.01, tasks=10, batch_size=32)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def client_data(client: int, n: int, seed: int):
    """Class clusters shared by all clients; client 1 names the classes differently (a label
    permutation), so one global model cannot fit both and personalisation has to help."""
    gen = torch.Generator().manual_seed(1000 * client + seed)
    cls = torch.randint(0, N_CLASSES, (n,), generator=gen)
    mu_f = torch.randn(N_CLASSES, N_FEATURES, generator=torch.Generator().manual_seed(7))
    mu_h = torch.randn(N_CLASSES, HISTORY, EDGES, generator=torch.Generator().manual_seed(8))
    features = mu_f[cls] + 0.5 * torch.randn(n, N_FEATURES, generator=gen)
    history = mu_h[cls] + 0.5 * torch.randn(n, HISTORY, EDGES, generator=gen)
    perm = torch.arange(N_CLASSES) if client == 0 else torch.roll(torch.arange(N_CLASSES), 1)
    return features, history, perm[cls]


def fresh_net(seed: int = 0, cfg: ModelConfig = MLP) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg, N_FEATURES, HISTORY, EDGES)


def accuracy(net, data) -> float:
    with torch.inference_mode():
        return float((net(data[0], data[1]).argmax(1) == data[2]).float().mean())


def test_meta_train_is_deterministic_under_a_seed():
    data = client_data(0, 200, 0)
    runs = []
    for _ in range(2):
        net = fresh_net()
        losses = meta_train(net, *data, **META, seed=4)
        runs.append((losses, flatten_params(net)))
    assert len(runs[0][0]) == META["tasks"]
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    # a different seed draws different support/query batches
    other = fresh_net()
    assert meta_train(other, *data, **META, seed=5) != runs[0][0]


def test_meta_train_updates_in_place_and_lowers_the_query_loss():
    data = client_data(0, 400, 0)
    net = fresh_net()
    before = flatten_params(net)
    losses = meta_train(net, *data, **{**META, "tasks": 40}, seed=0)
    assert not np.array_equal(before, flatten_params(net))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert not net.training  # left in eval mode, like common.training.fit


@pytest.mark.parametrize("arch", ["lstm_dueling", "cnn"])
def test_meta_train_and_adapt_work_for_the_other_architectures(arch):
    data = client_data(0, 64, 0)
    cfg = ModelConfig(arch=arch, hidden=(16,), lstm_hidden=8, conv_channels=(4, 8), map_hidden=8)
    net = fresh_net(cfg=cfg)
    before = flatten_params(net)
    losses = meta_train(net, *data, **{**META, "tasks": 2}, seed=0)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert not np.array_equal(before, flatten_params(net))
    tuned = adapt(net, *data, steps=2, lr=0.01, batch_size=16, seed=0)
    assert not np.array_equal(flatten_params(tuned), flatten_params(net))


def test_adapt_returns_a_tuned_copy_and_leaves_the_input_untouched():
    data = client_data(1, 200, 0)
    net = fresh_net()
    before = flatten_params(net)
    tuned = adapt(net, *data, steps=5, lr=0.05, batch_size=32, seed=0)
    assert tuned is not net
    np.testing.assert_array_equal(flatten_params(net), before)
    assert not np.array_equal(flatten_params(tuned), before)
    again = adapt(net, *data, steps=5, lr=0.05, batch_size=32, seed=0)
    np.testing.assert_array_equal(flatten_params(again), flatten_params(tuned))
    untuned = adapt(net, *data, steps=0, lr=0.05, batch_size=32, seed=0)
    assert untuned is not net
    np.testing.assert_array_equal(flatten_params(untuned), before)


def test_inputs_are_checked():
    f, h, y = client_data(0, 10, 0)
    with pytest.raises(ValueError, match="same length"):
        meta_train(fresh_net(), f, h[:5], y, **META, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        adapt(fresh_net(), f[:0], h[:0], y[:0], steps=1, lr=0.1, batch_size=4, seed=0)
    # a one-sample buffer serves as both support and query
    assert len(meta_train(fresh_net(), f[:1], h[:1], y[:1], **{**META, "tasks": 2}, seed=0)) == 2


def test_a_meta_trained_model_personalises_to_each_client():
    """Two clients disagree on the label names: the averaged meta-model fits neither, and a few
    SGD steps on a client's own buffer recover its labels on held-out data."""
    train = [client_data(c, 400, 0) for c in (0, 1)]
    test = [client_data(c, 400, 1) for c in (0, 1)]
    net = fresh_net()
    for round_ in range(5):  # FedMeta2Ag rounds with one edge server: average the meta-models
        updates = []
        for c in (0, 1):
            local = copy.deepcopy(net)
            meta_train(local, *train[c], **META, seed=10 * round_ + c)
            updates.append(flatten_params(local))
        unflatten_params(net, np.mean(updates, axis=0))
    for c in (0, 1):
        tuned = adapt(net, *train[c], steps=5, lr=0.1, batch_size=32, seed=c)
        global_acc, tuned_acc = accuracy(net, test[c]), accuracy(tuned, test[c])
        assert global_acc < 0.75  # the conflict is real: no model fits both clients
        assert tuned_acc > 0.9 and tuned_acc > global_acc + 0.2

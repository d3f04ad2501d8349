"""FedMeta2Ag's local meta-learning (seed 003, §2.3.1, Algorithm 1 ``ModelTrainedMAML``).

A client receives the meta-model θ, samples a *task* from its own buffer (a support batch
``D_s`` and a disjoint query batch ``D_q``), adapts on the support batch with one or two plain
gradient steps, ``θ' = θ − α ∇L_{D_s}(θ)`` (eq. 26), and scores the adapted model on the query
batch (eq. 27); the query loss updates θ. We use **first-order MAML** (FOMAML): the query
gradient is taken at θ' and applied to θ as if ``dθ'/dθ = I``, which avoids second derivatives
(and so works for every network of ``common.models``, LSTMs included) at a small cost in
accuracy. The outer update uses Adam with rate β, as Finn et al.'s MAML does; the inner loop is
plain SGD with rate α, as in the paper's equations.

The loss is cross-entropy on the oracle's hard labels, the supervised target KECO's students
use, so the strategies are compared on the same data. At evaluation (meta-test) a client
personalises the global meta-model with a few SGD steps on its own buffer (:func:`adapt`), the
same update rule the inner loop trained the meta-model to respond to.

Inputs are already normalised float32 tensors (``features / feature_scale`` etc., see
:func:`common.fed.local.train_round`); labels are int64 actions.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def _support_query(
    n: int, batch_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint support and query index batches of up to ``batch_size`` each (a buffer of one
    sample has to serve as both)."""
    if n == 1:
        only = torch.zeros(1, dtype=torch.long)
        return only, only
    b = max(1, min(batch_size, n // 2))
    perm = torch.randperm(n, generator=gen)
    return perm[:b], perm[b : 2 * b]


def _check(features: torch.Tensor, history: torch.Tensor, labels: torch.Tensor) -> int:
    n = len(labels)
    if n == 0:
        raise ValueError("meta-learning needs at least one labelled sample")
    if len(features) != n or len(history) != n:
        raise ValueError(
            f"features, history and labels must have the same length, got "
            f"{len(features)}, {len(history)}, {n}"
        )
    return n


def meta_train(
    net: nn.Module,
    features: torch.Tensor,
    history: torch.Tensor,
    labels: torch.Tensor,
    *,
    inner_steps: int,
    inner_lr: float,
    outer_lr: float,
    tasks: int,
    batch_size: int,
    seed: int,
) -> list[float]:
    """First-order MAML on one client's buffer, updating ``net`` in place.

    Each of ``tasks`` meta-tasks draws a support and a query batch, takes ``inner_steps`` SGD
    steps (rate ``inner_lr``) on the support batch from the current θ, and applies the query
    gradient at the adapted weights to θ with Adam (rate ``outer_lr``). Returns the query loss
    (after adaptation: the meta-objective) of every meta-task.
    """
    n = _check(features, history, labels)
    gen = torch.Generator().manual_seed(seed)
    trainable = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    params = [p for _, p in trainable]
    buffers = dict(net.named_buffers())
    optimizer = torch.optim.Adam(params, lr=outer_lr)
    losses: list[float] = []
    net.train()
    for _ in range(tasks):
        support, query = _support_query(n, batch_size, gen)
        # θ' starts at θ; detaching after every inner step is what makes it first-order
        fast = {name: p.detach().clone().requires_grad_(True) for name, p in trainable}
        for _ in range(inner_steps):
            out = functional_call(net, (fast, buffers), (features[support], history[support]))
            grads = torch.autograd.grad(F.cross_entropy(out, labels[support]), list(fast.values()))
            fast = {
                k: (w - inner_lr * g).detach().requires_grad_(True)
                for (k, w), g in zip(fast.items(), grads, strict=True)
            }
        out = functional_call(net, (fast, buffers), (features[query], history[query]))
        query_loss = F.cross_entropy(out, labels[query])
        grads = torch.autograd.grad(query_loss, list(fast.values()))
        optimizer.zero_grad()
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
        losses.append(float(query_loss.detach()))
    net.eval()
    return losses


def adapt(
    net: nn.Module,
    features: torch.Tensor,
    history: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> nn.Module:
    """MAML's meta-test: a copy of ``net`` fine-tuned by ``steps`` SGD steps (rate ``lr``) on
    minibatches of the client's own data; ``net`` itself is left untouched."""
    n = _check(features, history, labels)
    tuned = copy.deepcopy(net)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD([p for p in tuned.parameters() if p.requires_grad], lr=lr)
    tuned.train()
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[: min(batch_size, n)]
        loss = F.cross_entropy(tuned(features[idx], history[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tuned.eval()
    return tuned

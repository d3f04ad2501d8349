"""Teacher and student offloading networks: KECO's CNN, KD-D3QN's LSTM + dueling, a small MLP.

Every network maps one task's observation to one score per action ``0..M`` (0 = local,
``j`` = edge node ``j``): Q-values when trained by D3QN, logits when trained by imitation.

Inputs (normalised by :func:`common.mec.feature_scale` before the call):

| tensor     | shape        | meaning                                                            |
| ---------- | ------------ | ------------------------------------------------------------------ |
| `features` | `[B, F]`     | the device's feature row (table in :mod:`common.mec.features`)     |
| `history`  | `[B, K, M]`  | active queues per EN over the last K slots, oldest first           |

A student is the same class built from ``ModelConfig.scaled(ratio)``: every hidden width
(conv channels, LSTM units, FC units) is multiplied by ``ratio`` and rounded, at least 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.config import (
    ConfigError,
    as_ints,
    build,
    check_positive_int,
    defaults_of,
    finite,
    load_preset,
    register_schema,
    to_dict,
)
from common.mec.features import n_features

MODEL_ARCHS = ("cnn", "lstm_dueling", "mlp")
ARCH_FIELDS = {
    "cnn": ("conv_channels", "kernel_size", "pool_size", "map_size", "map_hidden"),
    "lstm_dueling": ("lstm_hidden",),
    "mlp": (),
}
"""The fields only one architecture reads (its layers before the join); the others are shared."""


@dataclass(frozen=True)
class ModelConfig:
    """A teacher or student offloading network (``conf/model/*.yaml``)."""

    arch: str = "cnn"
    """``cnn`` (KECO teacher), ``lstm_dueling`` (KD-D3QN teacher) or ``mlp`` (small student)."""
    ratio: float = 1.0
    """Multiplier on every hidden width (conv channels, LSTM units, FC units); students use < 1
    (KD-D3QN's STUDENT_RATIO)."""
    hidden: tuple[int, ...] = (128,)
    """Widths of the fully connected ReLU layers after the history and the instantaneous
    features are joined (before the output heads)."""
    dueling: bool = True
    """Dueling heads Q = V + A − mean(A) (V cancels under a softmax, so training on targets by
    cross-entropy is unchanged); ``False`` gives one linear head."""
    conv_channels: tuple[int, ...] = (32, 64)
    """``cnn``: output channels of the two conv layers (KECO: 32 then 64)."""
    kernel_size: int = 6
    """``cnn``: square conv kernel, stride 1 (KECO: 6×6)."""
    pool_size: int = 2
    """``cnn``: square max-pool window and stride (KECO: 2×2, stride 2)."""
    map_size: int = 32
    """``cnn``: the K×M load history is resized (nearest neighbour) to map_size × map_size so
    that conv-pool-conv-pool with 6×6 kernels is valid (needs >= 19)."""
    lstm_hidden: int = 24
    """``lstm_dueling``: LSTM units over the K-slot history."""
    map_hidden: int = 64
    """``cnn``: width of the FC layer on the pooled conv features, before the instantaneous
    features are joined (so the 1,024 map features do not drown the task's feature row)."""

    def scaled(self, ratio: float) -> ModelConfig:
        """The student of this network: same topology, hidden widths × ``ratio``."""
        return dataclasses.replace(self, ratio=float(ratio)).validate()

    def validate(self) -> ModelConfig:
        if self.arch not in MODEL_ARCHS:
            raise ConfigError(f"model.arch must be one of {list(MODEL_ARCHS)}, got {self.arch!r}")
        if not finite(self.ratio) or not 0.0 < self.ratio <= 4.0:
            raise ConfigError(f"model.ratio must be in (0, 4], got {self.ratio!r}")
        as_ints(self.hidden, "model.hidden", allow_empty=True)
        if len(as_ints(self.conv_channels, "model.conv_channels")) != 2:
            raise ConfigError(f"model.conv_channels needs two values, got {self.conv_channels!r}")
        for name in ("kernel_size", "pool_size", "map_size", "lstm_hidden", "map_hidden"):
            check_positive_int(getattr(self, name), f"model.{name}")
        if not isinstance(self.dueling, bool):
            raise ConfigError(f"model.dueling must be true or false, got {self.dueling!r}")
        k, p = self.kernel_size, self.pool_size
        side = ((self.map_size - k + 1) // p - k + 1) // p
        if self.arch == "cnn" and side < 1:
            raise ConfigError(
                f"model.map_size={self.map_size} is too small for two {k}x{k} convs each followed "
                f"by a {p}x{p} pool; use at least {(k - 1 + p * (k - 1 + p))}"
            )
        return self


def model_from_dict(raw: Any) -> ModelConfig:
    """Build and validate a :class:`ModelConfig` (``conf/model/<name>.yaml``)."""
    d = to_dict(raw)
    d.pop("_target_", None)
    for name in ("hidden", "conv_channels"):
        if name in d:
            d[name] = as_ints(d[name], f"model.{name}", allow_empty=name == "hidden")
    if "ratio" in d and isinstance(d["ratio"], int) and not isinstance(d["ratio"], bool):
        d["ratio"] = float(d["ratio"])
    return build(ModelConfig, d, "model").validate()


def register_model_schemas() -> None:
    """Register ``schema/model_<arch>`` for each architecture: its ``arch``, then the defaults of
    the fields it reads, input to output (ratio, its own layers, the joined FC layers and the
    heads); ``conf/model/*.yaml`` starts from its architecture's."""
    for arch, own in ARCH_FIELDS.items():
        node = defaults_of(ModelConfig, ("arch", "ratio", *own, "hidden", "dueling"))
        register_schema(f"model_{arch}", {**node, "arch": arch})


def load_model(name: str, **overrides: object) -> ModelConfig:
    """The preset ``conf/model/<name>.yaml`` as a validated :class:`ModelConfig` (its
    architecture's schema applied, then ``overrides``), outside Hydra."""
    register_model_schemas()
    return model_from_dict(load_preset("model", name, **overrides))


def scale_width(width: int, ratio: float) -> int:
    """A hidden width times the student ratio, rounded, at least 1."""
    return max(1, int(round(width * ratio)))


class QHead(nn.Module):
    """FC + ReLU layers, then dueling value/advantage heads (or one linear layer) → M+1 scores.

    Dueling: ``Q = V + A − mean(A)`` (KD-D3QN eq. 15); under softmax V cancels, so the same head
    serves classification (imitation) and Q-learning.
    """

    def __init__(self, in_dim: int, hidden: list[int], n_actions: int, dueling: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        self.body = nn.Sequential(*layers)
        self.dueling = dueling
        self.advantage = nn.Linear(in_dim, n_actions)
        self.value = nn.Linear(in_dim, 1) if dueling else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        adv = self.advantage(x)
        if self.value is None:
            return adv
        return self.value(x) + adv - adv.mean(dim=1, keepdim=True)


class CNNNet(nn.Module):
    """KECO's CNN: the EN-load history as a 2-D map → conv 32@6×6 → pool 2 → conv 64@6×6 → pool 2.

    The K×M map (10×5 in the presets) is too small for two 6×6 convs with 2×2 pooling, so it is
    resized by nearest-neighbour interpolation to ``map_size × map_size`` (default 32: 32 → conv
    27 → pool 13 → conv 8 → pool 4, i.e. 64·4·4 = 1024 map features). Nearest resizing repeats each
    (slot, EN) cell in a block, so a 6×6 kernel sees a few slots of one or two ENs, rather than
    the mostly empty canvas that zero-padding would give. The flattened map features go through
    an FC layer (``map_hidden``), are joined with the instantaneous features, then the FC layers
    (``hidden``) and the head.
    """

    def __init__(self, cfg: ModelConfig, n_features: int, history_slots: int, n_edges: int):
        super().__init__()
        c1, c2 = (scale_width(c, cfg.ratio) for c in cfg.conv_channels)
        k, p = cfg.kernel_size, cfg.pool_size
        self.map_size = cfg.map_size
        self.conv1 = nn.Conv2d(1, c1, kernel_size=k, stride=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=k, stride=1)
        self.pool = nn.MaxPool2d(kernel_size=p, stride=p)
        side = ((cfg.map_size - k + 1) // p - k + 1) // p
        map_hidden = scale_width(cfg.map_hidden, cfg.ratio)
        self.map_fc = nn.Linear(c2 * side * side, map_hidden)
        hidden = [scale_width(h, cfg.ratio) for h in cfg.hidden]
        self.head = QHead(map_hidden + n_features, hidden, n_edges + 1, cfg.dueling)

    def forward(self, features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(history.unsqueeze(1), size=(self.map_size, self.map_size))
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.map_fc(x.flatten(1)))
        return self.head(torch.cat([x, features], dim=1))


class LSTMDuelingNet(nn.Module):
    """KD-D3QN's network: LSTM over the K-slot EN-load history, its last hidden state joined
    with the instantaneous features, FC + ReLU, dueling value/advantage heads → Q-values."""

    def __init__(self, cfg: ModelConfig, n_features: int, history_slots: int, n_edges: int):
        super().__init__()
        units = scale_width(cfg.lstm_hidden, cfg.ratio)
        self.lstm = nn.LSTM(input_size=n_edges, hidden_size=units, batch_first=True)
        hidden = [scale_width(h, cfg.ratio) for h in cfg.hidden]
        self.head = QHead(units + n_features, hidden, n_edges + 1, cfg.dueling)

    def forward(self, features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        _, (h_last, _) = self.lstm(history)
        return self.head(torch.cat([h_last[-1], features], dim=1))


class MLPNet(nn.Module):
    """A small MLP student: instantaneous features and the flattened history, FC layers, head."""

    def __init__(self, cfg: ModelConfig, n_features: int, history_slots: int, n_edges: int):
        super().__init__()
        hidden = [scale_width(h, cfg.ratio) for h in cfg.hidden]
        in_dim = n_features + history_slots * n_edges
        self.head = QHead(in_dim, hidden, n_edges + 1, cfg.dueling)

    def forward(self, features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([features, history.flatten(1)], dim=1))


ARCHS: dict[str, type[nn.Module]] = {
    "cnn": CNNNet,
    "lstm_dueling": LSTMDuelingNet,
    "mlp": MLPNet,
}


def build_model(cfg: ModelConfig, n_features: int, history_slots: int, n_edges: int) -> nn.Module:
    """Instantiate the network of ``cfg`` for feature rows of ``n_features``, history K×M and M
    edge nodes."""
    return ARCHS[cfg.arch](cfg, n_features, history_slots, n_edges)


def build_for_scenario(cfg: ModelConfig, scenario: object) -> nn.Module:
    """Instantiate ``cfg`` with the input sizes of a :class:`common.mec.scenario.ScenarioConfig`."""
    n_edges = scenario.n_edges  # type: ignore[attr-defined]
    return build_model(cfg, n_features(n_edges), scenario.history_slots, n_edges)  # type: ignore[attr-defined]

"""The MEC system a simulation runs: ``ScenarioConfig`` and the presets of ``conf/scenario/``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common.config import (
    ConfigError,
    build,
    defaults_of,
    finite,
    load_preset,
    register_schema,
    to_dict,
)


def _scenario_floats(value: Any, name: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0:
        return tuple(float(v) for v in value)
    raise ConfigError(f"scenario.{name}: expected a number or a non-empty list, got {value!r}")


# --------------------------------------------------------------------------------------------
# Scenario (the MEC simulator)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PressureConfig:
    """Background load injected on edge nodes (KECO's CPU and memory pressure)."""

    cpu_level: float = 0.0
    """Peak fraction of each pressured node's CPU taken by background load, in [0, 1)."""
    mem_level: float = 0.0
    """Peak fraction of each pressured node's memory taken by background load, in [0, 1]."""
    shape: str = "constant"
    """Time profile of the pressure: ``constant``, ``ramp`` (0 → level over the horizon) or
    ``periodic`` (a raised sine with period ``period_s``)."""
    period_s: float = 10.0
    """Period of the ``periodic`` shape, seconds."""
    edges_fraction: float = 1.0
    """Fraction of edge nodes under pressure (the first ones by index)."""

    def validate(self) -> None:
        if not 0.0 <= self.cpu_level < 1.0:
            raise ConfigError(
                f"scenario.pressure.cpu_level must be in [0, 1), got {self.cpu_level}"
            )
        if not 0.0 <= self.mem_level <= 1.0:
            raise ConfigError(
                f"scenario.pressure.mem_level must be in [0, 1], got {self.mem_level}"
            )
        if self.shape not in ("constant", "ramp", "periodic"):
            raise ConfigError(
                "scenario.pressure.shape must be one of constant, ramp, periodic; "
                f"got {self.shape!r}"
            )
        if self.period_s <= 0:
            raise ConfigError(f"scenario.pressure.period_s must be > 0, got {self.period_s}")
        if not 0.0 <= self.edges_fraction <= 1.0:
            raise ConfigError(
                f"scenario.pressure.edges_fraction must be in [0, 1], got {self.edges_fraction}"
            )


@dataclass(frozen=True)
class ScenarioConfig:
    """Everything that defines an MEC system; see ``conf/scenario/*.yaml`` for the presets."""

    name: str = "custom"
    n_devices: int = 50
    """Number of mobile devices (MDs)."""
    n_edges: int = 5
    """Number of edge nodes (ENs)."""
    slot_s: float = 0.1
    """Slot length τ, seconds."""
    n_slots: int = 100
    """Decision slots per episode (arrivals only here); ``deadline_slots`` drain slots follow."""
    deadline_slots: int = 10
    """A task whose delay would exceed this many slots is dropped."""
    arrival_prob: float = 0.3
    """Probability that an MD gets a task in a decision slot."""
    task_volume: int | None = None
    """If set, the total number of tasks over the horizon; overrides ``arrival_prob`` with
    ``task_volume / (n_devices * n_slots)`` (KECO's 8,500 / 10,500 task workloads)."""
    task_mbit_min: float = 2.0
    """Smallest task size, Mbit (sizes are uniform on a ``task_mbit_step`` grid in [min, max))."""
    task_mbit_max: float = 5.0
    """Task sizes are strictly below this, Mbit."""
    task_mbit_step: float = 0.1
    """Grid of task sizes, Mbit."""
    density_gcycles_per_mbit: tuple[float, ...] = (0.297,)
    """Computation density; with several values each MD draws one per episode."""
    local_ghz: float = 2.5
    """MD CPU frequency f_L, GHz."""
    edge_ghz: tuple[float, ...] = (41.8,)
    """EN CPU frequency f_E, GHz; one value for all ENs or one per EN (heterogeneous)."""
    edge_mem_gb: tuple[float, ...] | None = None
    """EN memory, GB (one value or one per EN); ``None`` disables memory accounting."""
    task_mem_gb_min: float = 0.0
    """Smallest memory demand of a task at an EN, GB."""
    task_mem_gb_max: float = 0.0
    """Largest memory demand of a task at an EN, GB (uniform in [min, max])."""
    channel: str = "fixed"
    """``fixed`` (rate ``rate_mbps``) or ``shannon`` (B·log2(1 + SNR·|h|²) with fading)."""
    rate_mbps: float = 14.0
    """Uplink rate of the ``fixed`` channel, Mbit/s."""
    bandwidth_mhz: float = 2.0
    """Uplink bandwidth B of the ``shannon`` channel, MHz."""
    snr_db: float = 20.0
    """Mean received SNR P|h|²/(B·N0) of the ``shannon`` channel, dB."""
    fading: str = "rayleigh"
    """``rayleigh`` (|h|² ~ Exp(1) each slot) or ``none``."""
    energy: str = "power"
    """Local compute energy model: ``none``, ``power`` (p_comp·t) or ``dvfs`` (κ·f_L²·cycles)."""
    p_comp_w: float = 2.0
    """MD compute power of the ``power`` model, W."""
    kappa: float = 1e-27
    """Effective switched capacitance κ of the ``dvfs`` model."""
    p_tx_w: float = 2.3
    """MD transmit power, W."""
    p_idle_w: float = 0.1
    """MD idle power while its task is at the edge, W."""
    p_edge_w: float = 5.0
    """EN compute power (energy_edge), W; a task is charged its share of the node."""
    alpha_modes: tuple[float, ...] = (0.5,)
    """Power modes α (weight of delay against energy in the QoE); each MD draws one per episode."""
    energy_scale: float = 0.5
    """E_scaled = energy_scale · E_md (QECO: 10/20)."""
    reward_base: float | None = None
    """R_base of the QoE reward; ``None`` means 4·deadline_slots (QECO)."""
    edge_allocation: str = "equal"
    """EN CPU split among active queues: ``equal`` (reference) or ``kkt`` (FedMeta2Ag,
    f_ij ∝ sqrt(backlog cycles))."""
    history_slots: int = 10
    """Length K of the EN-load history in observations."""
    cpu_fail_margin: float = 1.0
    """An offload fails when the node's free CPU (GHz) is below margin × the task's CPU demand
    (its cycles over the deadline)."""
    pressure: PressureConfig = field(default_factory=PressureConfig)

    # ---- derived -------------------------------------------------------------------------
    @property
    def n_time(self) -> int:
        """Slots per episode: decision slots plus drain slots."""
        return self.n_slots + self.deadline_slots

    @property
    def effective_arrival_prob(self) -> float:
        if self.task_volume is not None:
            return self.task_volume / (self.n_devices * self.n_slots)
        return self.arrival_prob

    @property
    def r_base(self) -> float:
        return 4.0 * self.deadline_slots if self.reward_base is None else self.reward_base

    def edge_ghz_array(self) -> list[float]:
        return _per_edge(self.edge_ghz, self.n_edges, "edge_ghz")

    def edge_mem_array(self) -> list[float] | None:
        if self.edge_mem_gb is None:
            return None
        return _per_edge(self.edge_mem_gb, self.n_edges, "edge_mem_gb")

    def validate(self) -> ScenarioConfig:
        """Check every field; raise :class:`ConfigError` naming the first bad one."""
        positive_ints = ("n_devices", "n_edges", "n_slots", "deadline_slots", "history_slots")
        for name in positive_ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"scenario.{name} must be a positive integer, got {v!r}")
        positive = ("slot_s", "local_ghz", "task_mbit_step", "bandwidth_mhz")
        for name in positive:
            v = getattr(self, name)
            if not finite(v) or v <= 0:
                raise ConfigError(f"scenario.{name} must be a positive number, got {v!r}")
        non_negative = (
            "p_comp_w", "p_tx_w", "p_idle_w", "p_edge_w", "kappa", "energy_scale",
            "task_mem_gb_min", "task_mem_gb_max", "cpu_fail_margin",
        )  # fmt: skip
        for name in non_negative:
            v = getattr(self, name)
            if not finite(v) or v < 0:
                raise ConfigError(f"scenario.{name} must be a number >= 0, got {v!r}")
        if self.channel not in ("fixed", "shannon"):
            raise ConfigError(
                f"scenario.channel must be 'fixed' or 'shannon', got {self.channel!r}"
            )
        if self.channel == "fixed" and (not finite(self.rate_mbps) or self.rate_mbps <= 0):
            raise ConfigError(
                f"scenario.rate_mbps must be a positive number, got {self.rate_mbps!r}"
            )
        if not finite(self.snr_db):
            raise ConfigError(f"scenario.snr_db must be a finite number, got {self.snr_db!r}")
        if self.fading not in ("rayleigh", "none"):
            raise ConfigError(f"scenario.fading must be 'rayleigh' or 'none', got {self.fading!r}")
        if self.energy not in ("none", "power", "dvfs"):
            raise ConfigError(
                f"scenario.energy must be one of none, power, dvfs; got {self.energy!r}"
            )
        if self.edge_allocation not in ("equal", "kkt"):
            raise ConfigError(
                f"scenario.edge_allocation must be 'equal' or 'kkt', got {self.edge_allocation!r}"
            )
        if not 0.0 <= self.arrival_prob <= 1.0:
            raise ConfigError(f"scenario.arrival_prob must be in [0, 1], got {self.arrival_prob}")
        if self.task_volume is not None:
            if self.task_volume <= 0:
                raise ConfigError(f"scenario.task_volume must be > 0, got {self.task_volume}")
            if self.effective_arrival_prob > 1.0:
                raise ConfigError(
                    f"scenario.task_volume={self.task_volume} needs more than one task per device "
                    f"per slot; raise n_devices or n_slots"
                )
        if not finite(self.task_mbit_min) or self.task_mbit_min <= 0:
            raise ConfigError(f"scenario.task_mbit_min must be > 0, got {self.task_mbit_min!r}")
        if not finite(self.task_mbit_max) or self.task_mbit_max <= self.task_mbit_min:
            raise ConfigError(
                f"scenario.task_mbit_max ({self.task_mbit_max}) must be greater than "
                f"scenario.task_mbit_min ({self.task_mbit_min})"
            )
        if self.task_mem_gb_max < self.task_mem_gb_min:
            raise ConfigError(
                f"scenario.task_mem_gb_max ({self.task_mem_gb_max}) must be >= "
                f"scenario.task_mem_gb_min ({self.task_mem_gb_min})"
            )
        for name in ("density_gcycles_per_mbit", "edge_ghz"):
            vals = getattr(self, name)
            if any(not finite(v) or v <= 0 for v in vals):
                raise ConfigError(f"scenario.{name} values must be positive, got {list(vals)}")
        if any(not 0.0 <= a <= 1.0 for a in self.alpha_modes):
            raise ConfigError(
                f"scenario.alpha_modes must be in [0, 1], got {list(self.alpha_modes)}"
            )
        self.edge_ghz_array()
        mem = self.edge_mem_array()
        if mem is not None and any(not finite(v) or v <= 0 for v in mem):
            raise ConfigError(f"scenario.edge_mem_gb values must be positive, got {mem}")
        if self.reward_base is not None and not finite(self.reward_base):
            raise ConfigError(f"scenario.reward_base must be a number, got {self.reward_base!r}")
        self.pressure.validate()
        return self


def _per_edge(values: tuple[float, ...], n_edges: int, name: str) -> list[float]:
    if len(values) == 1:
        return [values[0]] * n_edges
    if len(values) != n_edges:
        raise ConfigError(
            f"scenario.{name} has {len(values)} values but n_edges={n_edges}; give one value "
            f"or exactly one per edge node"
        )
    return list(values)


def scenario_from_dict(raw: Any) -> ScenarioConfig:
    """Build and validate a :class:`ScenarioConfig` from a mapping (OmegaConf or dict)."""
    d = to_dict(raw)
    d.pop("_target_", None)
    pressure = build(PressureConfig, to_dict(d.pop("pressure", None)), "scenario.pressure")
    for name in ("density_gcycles_per_mbit", "edge_ghz", "alpha_modes"):
        if name in d:
            d[name] = _scenario_floats(d[name], name)
    if d.get("edge_mem_gb") is not None:
        d["edge_mem_gb"] = _scenario_floats(d["edge_mem_gb"], "edge_mem_gb")
    cfg = build(ScenarioConfig, d, "scenario")
    cfg = dataclasses.replace(cfg, pressure=pressure)
    return cfg.validate()


PRESETS = ("tang2020", "qeco", "seed001", "keco")


def register_scenario_schema() -> None:
    """Register ``schema/scenario``: every field's default, where ``conf/scenario/`` starts."""
    register_schema("scenario", defaults_of(ScenarioConfig))


def load_scenario(name: str, **overrides: Any) -> ScenarioConfig:
    """Load a preset from ``conf/scenario/<name>.yaml`` and apply keyword overrides."""
    register_scenario_schema()
    return scenario_from_dict(load_preset("scenario", name, **overrides))

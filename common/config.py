"""The one config boundary: turns Hydra/OmegaConf or Flower run-config values into typed objects.

Every other module receives the dataclasses defined here and never indexes raw config strings.
Validation happens here, before any work starts, and every error names the field to fix.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what to change."""


def _to_dict(cfg: Any) -> dict[str, Any]:
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


def _build(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys with the list of valid ones
    and values of the wrong type (by the field's annotation) with the field's name, so that the
    checks that follow only ever see values of the declared types."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _typed(v, hints[k], f"{where}.{k}") for k, v in raw.items()})


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


def _typed(value: Any, hint: Any, name: str) -> Any:
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
                return _typed(value, option, name)
            except ConfigError:
                continue
    elif origin is tuple:
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            item = args[0] if args else Any
            return tuple(_typed(v, item, f"{name}[{i}]") for i, v in enumerate(value))
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


def _as_floats(value: Any, name: str) -> tuple[float, ...]:
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
            if not _finite(v) or v <= 0:
                raise ConfigError(f"scenario.{name} must be a positive number, got {v!r}")
        non_negative = (
            "p_comp_w", "p_tx_w", "p_idle_w", "p_edge_w", "kappa", "energy_scale",
            "task_mem_gb_min", "task_mem_gb_max", "cpu_fail_margin",
        )  # fmt: skip
        for name in non_negative:
            v = getattr(self, name)
            if not _finite(v) or v < 0:
                raise ConfigError(f"scenario.{name} must be a number >= 0, got {v!r}")
        if self.channel not in ("fixed", "shannon"):
            raise ConfigError(
                f"scenario.channel must be 'fixed' or 'shannon', got {self.channel!r}"
            )
        if self.channel == "fixed" and (not _finite(self.rate_mbps) or self.rate_mbps <= 0):
            raise ConfigError(
                f"scenario.rate_mbps must be a positive number, got {self.rate_mbps!r}"
            )
        if not _finite(self.snr_db):
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
        if not _finite(self.task_mbit_min) or self.task_mbit_min <= 0:
            raise ConfigError(f"scenario.task_mbit_min must be > 0, got {self.task_mbit_min!r}")
        if not _finite(self.task_mbit_max) or self.task_mbit_max <= self.task_mbit_min:
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
            if any(not _finite(v) or v <= 0 for v in vals):
                raise ConfigError(f"scenario.{name} values must be positive, got {list(vals)}")
        if any(not 0.0 <= a <= 1.0 for a in self.alpha_modes):
            raise ConfigError(
                f"scenario.alpha_modes must be in [0, 1], got {list(self.alpha_modes)}"
            )
        self.edge_ghz_array()
        mem = self.edge_mem_array()
        if mem is not None and any(not _finite(v) or v <= 0 for v in mem):
            raise ConfigError(f"scenario.edge_mem_gb values must be positive, got {mem}")
        if self.reward_base is not None and not _finite(self.reward_base):
            raise ConfigError(f"scenario.reward_base must be a number, got {self.reward_base!r}")
        self.pressure.validate()
        return self


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    d = _to_dict(raw)
    d.pop("_target_", None)
    pressure = _build(PressureConfig, _to_dict(d.pop("pressure", None)), "scenario.pressure")
    for name in ("density_gcycles_per_mbit", "edge_ghz", "alpha_modes"):
        if name in d:
            d[name] = _as_floats(d[name], name)
    if d.get("edge_mem_gb") is not None:
        d["edge_mem_gb"] = _as_floats(d["edge_mem_gb"], "edge_mem_gb")
    cfg = _build(ScenarioConfig, d, "scenario")
    cfg = dataclasses.replace(cfg, pressure=pressure)
    return cfg.validate()


PRESETS = ("tang2020", "qeco", "seed001", "keco")


def load_scenario(name: str, **overrides: Any) -> ScenarioConfig:
    """Load a preset from ``conf/scenario/<name>.yaml`` and apply keyword overrides."""
    import yaml

    path = CONF_DIR / "scenario" / f"{name}.yaml"
    if not path.exists():
        valid = sorted(p.stem for p in (CONF_DIR / "scenario").glob("*.yaml"))
        raise ConfigError(f"unknown scenario preset {name!r}; valid presets are {valid}")
    raw = _resolve_defaults(path, yaml.safe_load(path.read_text()) or {})
    raw.update(overrides)
    return scenario_from_dict(raw)


def _resolve_defaults(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Apply a preset's Hydra ``defaults`` list (other presets of the same group, then _self_)."""
    import yaml

    defaults = raw.pop("defaults", None) or []
    merged: dict[str, Any] = {}
    for entry in defaults:
        if entry == "_self_":
            merged.update(raw)
            continue
        parent = path.parent / f"{entry}.yaml"
        merged.update(_resolve_defaults(parent, yaml.safe_load(parent.read_text()) or {}))
    if "_self_" not in defaults:
        merged.update(raw)
    return merged


# --------------------------------------------------------------------------------------------
# Simulator CLI / benchmark
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulateConfig:
    """Arguments of ``python -m experiments.simulate``."""

    scenario: ScenarioConfig
    policy: str
    episodes: int
    seed: int
    batch: int
    """Episodes simulated in parallel (vectorised); results do not depend on it."""


def simulate_from_dict(raw: Any) -> SimulateConfig:
    """Validate the simulate CLI's config; unknown policies fail with the list of valid ones."""
    from common.mec.policies import POLICIES

    d = _to_dict(raw)
    scenario = scenario_from_dict(d.get("scenario"))
    policy = d.get("policy")
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; valid policies are {sorted(POLICIES)}")
    episodes = d.get("episodes", 10)
    if not isinstance(episodes, int) or episodes <= 0:
        raise ConfigError(f"episodes must be a positive integer, got {episodes!r}")
    seed = d.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    batch = d.get("batch", 200)
    if not isinstance(batch, int) or batch <= 0:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}")
    return SimulateConfig(scenario, policy, episodes, seed, batch)


# --------------------------------------------------------------------------------------------
# Homomorphic encryption (conf/he/*.yaml)
# --------------------------------------------------------------------------------------------

# Largest total coefficient-modulus bits that keep 128-bit security (HomomorphicEncryption.org
# standard, as enforced by SEAL) for each ring dimension N.
HE_MAX_COEFF_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
HE_SCHEMES = ("ckks", "off")
HE_NOISE_STD = 3.19
"""Standard deviation of SEAL's error distribution (per polynomial coefficient)."""
HE_NOISE_SIGMAS = 12
"""Sums are decoded by rounding to integers: the decryption noise must stay below 1/2 with this
many standard deviations of margin (a miss has probability < 1e-32 per value)."""


@dataclass(frozen=True)
class HEConfig:
    """Encryption of the uploads and the global sums; see ``conf/he/*.yaml``.

    The protocol only adds, so values travel as fixed-point integers: an upload ``n_i·v`` is
    rounded to multiples of ``2^-fraction_bits`` and encrypted as an integer at the CKKS scale
    ``2^global_scale_bits``; the server adds; a client rounds the decrypted sum to the nearest
    integer, which is the exact sum of the uploads while the decryption noise stays below 1/2.
    Encryption then never changes a result: the plaintext backend adds the same integers.
    """

    name: str = "ckks"
    """Preset name (the YAML file stem); recorded in results."""
    scheme: str = "ckks"
    """``ckks`` (CKKS through TenSEAL's SEAL API, server adds ciphertexts only) or ``off`` (a
    plaintext backend with the same interface and the same integer sums)."""
    poly_modulus_degree: int = 8192
    """Ring dimension N; a ciphertext packs N real values as N/2 complex slots. Also the chunk
    size with ``off``."""
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40)
    """Bit sizes of the coefficient-modulus primes: the data primes, then the key-switching
    prime TenSEAL requires (an add-only protocol never switches keys). Ciphertexts live at the
    data level: one 60-bit prime keeps every ciphertext at 8 bytes per value (seeded upload)."""
    global_scale_bits: int = 18
    """CKKS scale 2^bits of the integers: large enough that the decryption noise of a sum of
    the run's uploads stays below 1/2 (``HE_NOISE_SIGMAS`` standard deviations)."""
    fraction_bits: int = 12
    """Fixed-point precision of ``n_i·v``: multiples of 2^-bits. The mean of the uploads is then
    within 2^-(bits+1) / min n_i of the exact mean, the same with and without encryption."""
    value_bound: float = 128.0
    """Largest |v| a client uploads (a model weight or a logit, before the weighting by n_i); a
    larger value is refused, since the sum could wrap around the modulus."""

    @property
    def slots(self) -> int:
        """Values per ciphertext (chunk): N real values in N/2 complex slots."""
        return self.poly_modulus_degree

    @property
    def enabled(self) -> bool:
        return self.scheme != "off"

    @property
    def data_bits(self) -> int:
        """Bits of the data modulus (all primes but the key-switching one)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    def noise_std(self, uploads: int) -> float:
        """Standard deviation of the decryption noise of a sum of ``uploads`` fresh uploads,
        per value, in integer units: sqrt(uploads) · σ · sqrt(N/2) / 2^scale (the canonical
        embedding spreads each coefficient's error over N/2 slots, two reals each)."""
        n = self.poly_modulus_degree
        return math.sqrt(uploads) * HE_NOISE_STD * math.sqrt(n / 2) / 2.0**self.global_scale_bits

    def headroom_bits(self, uploads: int, max_examples: int) -> float:
        """Bits the largest sum of a run needs: ``uploads`` × ``max_examples`` (n_i) ×
        ``value_bound`` × 2^fraction_bits integers at scale 2^global_scale_bits, with sign."""
        magnitude = uploads * max_examples * self.value_bound * 2.0**self.fraction_bits
        return math.log2(magnitude) + self.global_scale_bits + 1

    def check_run(self, uploads: int, max_examples: int) -> None:
        """Refuse a set too tight for a run whose sums hold up to ``uploads`` uploads with
        weights n_i up to ``max_examples``: the noise margin and the modulus headroom."""
        if not self.enabled:
            bits = self.headroom_bits(uploads, max_examples) - self.global_scale_bits
            if bits > 62:
                raise ConfigError(
                    f"he.fraction_bits={self.fraction_bits}: the plaintext sums need {bits:.1f} "
                    f"bits, above int64's 62; lower he.fraction_bits or he.value_bound"
                )
            return
        sigmas = 0.5 / self.noise_std(uploads)
        if sigmas < HE_NOISE_SIGMAS:
            need = self.global_scale_bits + math.log2(HE_NOISE_SIGMAS / sigmas)
            raise ConfigError(
                f"he.global_scale_bits={self.global_scale_bits} is too small for sums of "
                f"{uploads} uploads: the decryption noise leaves {sigmas:.1f} standard deviations "
                f"below 1/2, {HE_NOISE_SIGMAS} are needed; raise it to at least {math.ceil(need)}"
            )
        need = self.headroom_bits(uploads, max_examples)
        if need > self.data_bits:
            room = self.fraction_bits - math.ceil(need - self.data_bits)
            raise ConfigError(
                f"he: a sum of {uploads} uploads with n_i up to {max_examples} "
                f"(strategy.local.buffer_size) and |values| up to he.value_bound="
                f"{self.value_bound:g} at he.fraction_bits={self.fraction_bits} and "
                f"he.global_scale_bits={self.global_scale_bits} needs {need:.1f} bits, above the "
                f"{self.data_bits}-bit data modulus (he.coeff_mod_bit_sizes); lower "
                f"he.fraction_bits to {room} or less, or he.value_bound, or the buffer"
            )

    def validate(self) -> HEConfig:
        """Check every field; raise :class:`ConfigError` naming the first bad one."""
        if self.scheme not in HE_SCHEMES:
            raise ConfigError(f"he.scheme must be one of {list(HE_SCHEMES)}, got {self.scheme!r}")
        n = self.poly_modulus_degree
        if not isinstance(n, int) or isinstance(n, bool) or n not in HE_MAX_COEFF_BITS:
            raise ConfigError(
                f"he.poly_modulus_degree must be one of {sorted(HE_MAX_COEFF_BITS)}, got {n!r}"
            )
        for name, low, high in (("fraction_bits", 0, 40), ("global_scale_bits", 8, 59)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise ConfigError(f"he.{name} must be an integer in [{low}, {high}], got {v!r}")
        _check_positive(self.value_bound, "he.value_bound")
        bits = self.coeff_mod_bit_sizes
        if len(bits) < 2 or any(
            not isinstance(b, int) or isinstance(b, bool) or not 17 <= b <= 60 for b in bits
        ):
            raise ConfigError(
                "he.coeff_mod_bit_sizes must list at least two integers in [17, 60] (data primes "
                f"then the key-switching prime), got {list(bits)}"
            )
        if not self.enabled:
            return self
        if sum(bits) > HE_MAX_COEFF_BITS[n]:
            raise ConfigError(
                f"he.coeff_mod_bit_sizes sum to {sum(bits)} bits, above the 128-bit-security "
                f"limit of {HE_MAX_COEFF_BITS[n]} for poly_modulus_degree={n} "
                f"(HomomorphicEncryption.org standard); drop or shrink a prime or raise "
                f"poly_modulus_degree"
            )
        if self.data_bits <= self.global_scale_bits + 1:
            raise ConfigError(
                f"he.coeff_mod_bit_sizes data primes ({self.data_bits} bits) must exceed "
                f"he.global_scale_bits + 1 ({self.global_scale_bits + 1})"
            )
        return self


def he_from_dict(raw: Any) -> HEConfig:
    """Build and validate an :class:`HEConfig` from a mapping (OmegaConf or dict)."""
    d = _to_dict(raw)
    d.pop("_target_", None)
    # YAML 1.1 (PyYAML, command-line overrides) reads a bare ``off`` as ``False``.
    for key in ("scheme", "name"):
        if d.get(key) is False:
            d[key] = "off"
    bits = d.get("coeff_mod_bit_sizes")
    if bits is not None:
        if isinstance(bits, (str, bytes)) or not isinstance(bits, Sequence):
            raise ConfigError(f"he.coeff_mod_bit_sizes must be a list of integers, got {bits!r}")
        d["coeff_mod_bit_sizes"] = tuple(bits)
    return _build(HEConfig, d, "he").validate()


def load_he(name: str, **overrides: Any) -> HEConfig:
    """Load ``conf/he/<name>.yaml`` (``ckks``, ``ckks4096``, ``off``) and apply overrides."""
    import yaml

    path = CONF_DIR / "he" / f"{name}.yaml"
    if not path.exists():
        valid = sorted(p.stem for p in (CONF_DIR / "he").glob("*.yaml"))
        raise ConfigError(f"unknown he preset {name!r}; valid presets are {valid}")
    raw = yaml.safe_load(path.read_text()) or {}
    raw.update(overrides)
    return he_from_dict(raw)


# [section: he]


# --------------------------------------------------------------------------------------------
# Models, distillation and centralised training (conf/model/*.yaml, conf/experiment/*.yaml)
# --------------------------------------------------------------------------------------------
MODEL_ARCHS = ("cnn", "lstm_dueling", "mlp")
SCHEDULE_KINDS = ("constant", "linear", "cosine", "step")
DISTILL_LOSSES = ("mse", "kd")
TEACHER_TRAINING = ("imitation", "d3qn", "d3qn_warm")


def _check_positive_int(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _check_positive(value: Any, name: str) -> None:
    if not _finite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _check_unit(value: Any, name: str) -> None:
    if not _finite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")


def _as_ints(value: Any, name: str, allow_empty: bool = False) -> tuple[int, ...]:
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
    """Dueling heads Q = V + A − mean(A); ``False`` gives one linear head."""
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
        if not _finite(self.ratio) or not 0.0 < self.ratio <= 4.0:
            raise ConfigError(f"model.ratio must be in (0, 4], got {self.ratio!r}")
        _as_ints(self.hidden, "model.hidden", allow_empty=True)
        if len(_as_ints(self.conv_channels, "model.conv_channels")) != 2:
            raise ConfigError(f"model.conv_channels needs two values, got {self.conv_channels!r}")
        for name in ("kernel_size", "pool_size", "map_size", "lstm_hidden", "map_hidden"):
            _check_positive_int(getattr(self, name), f"model.{name}")
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
    d = _to_dict(raw)
    d.pop("_target_", None)
    for name in ("hidden", "conv_channels"):
        if name in d:
            d[name] = _as_ints(d[name], f"model.{name}", allow_empty=name == "hidden")
    if "ratio" in d and isinstance(d["ratio"], int) and not isinstance(d["ratio"], bool):
        d["ratio"] = float(d["ratio"])
    return _build(ModelConfig, d, "model").validate()


@dataclass(frozen=True)
class ScheduleConfig:
    """A scalar that moves from ``start`` to ``floor`` over ``length`` steps (KECO's δ)."""

    kind: str = "linear"
    """``constant`` (always start), ``linear``, ``cosine`` or ``step`` (start until ``length``,
    then floor)."""
    start: float = 0.75
    """Value at step 0 (KECO: hard:soft 3:1 early, so δ = 0.75)."""
    floor: float = 0.25
    """Value from step ``length`` on (KECO: 1:3 late, so δ = 0.25)."""
    length: int = 10
    """Steps (rounds or optimiser steps) to go from start to floor."""

    def validate(self, where: str = "schedule") -> ScheduleConfig:
        if self.kind not in SCHEDULE_KINDS:
            raise ConfigError(
                f"{where}.kind must be one of {list(SCHEDULE_KINDS)}, got {self.kind!r}"
            )
        _check_unit(self.start, f"{where}.start")
        _check_unit(self.floor, f"{where}.floor")
        _check_positive_int(self.length, f"{where}.length")
        return self


TARGET_KINDS = ("soft", "hard")


@dataclass(frozen=True)
class TargetConfig:
    """How the oracle's per-action costs become a student's training targets."""

    kind: str = "soft"
    """``soft``: softmin over the oracle's predicted cost of every action,
    ``q_a ∝ exp(−(c_a − min c)/temperature)``, so equally good actions get equal mass and
    near-ties share it; ``hard``: one-hot of the oracle's argmin (ties go to the lowest index)."""
    temperature: float = 0.3
    """Softmin temperature in QoE units (a cost difference of ``temperature`` is a factor e;
    on ``seed001`` the median gap between the two best actions is about 0.1)."""
    permute_edges: bool = True
    """Relabel the edge nodes of every minibatch sample at random (features, history and
    targets alike), so that no EN index is favoured."""

    def validate(self, where: str = "targets") -> TargetConfig:
        if self.kind not in TARGET_KINDS:
            raise ConfigError(
                f"{where}.kind must be one of {list(TARGET_KINDS)}, got {self.kind!r}"
            )
        _check_positive(self.temperature, f"{where}.temperature")
        if not isinstance(self.permute_edges, bool):
            raise ConfigError(
                f"{where}.permute_edges must be true or false, got {self.permute_edges!r}"
            )
        return self


def targets_from_dict(raw: Any, where: str = "targets") -> TargetConfig:
    """Build and validate a :class:`TargetConfig`."""
    return _build(TargetConfig, _to_dict(raw), where).validate(where)


@dataclass(frozen=True)
class DistillConfig:
    """Offline distillation of a student from a teacher (KD-D3QN §5.3, KECO loss)."""

    loss: str = "mse"
    """``mse``: KD-D3QN's MSE between student and teacher outputs (Q-values / logits);
    ``kd``: KECO's δ·CE(oracle label) + (1 − δ)·T²·KL(teacher ‖ student)."""
    steps: int = 10000
    """Optimiser steps (KD-D3QN's DISTILL_STEPS)."""
    batch_size: int = 256
    """States per optimiser step."""
    lr: float = 1e-3
    """Adam learning rate."""
    temperature: float = 2.0
    """Softmax temperature T of the ``kd`` loss."""
    delta: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(length=10000))
    """Weight δ of the hard-label term over the optimiser steps (``kd`` loss only)."""
    permute_edges: bool = True
    """Relabel the ENs of every minibatch sample at random (states and the teacher's
    per-action outputs alike), as the students' training does."""

    def validate(self, where: str = "distill") -> DistillConfig:
        if self.loss not in DISTILL_LOSSES:
            raise ConfigError(
                f"{where}.loss must be one of {list(DISTILL_LOSSES)}, got {self.loss!r}"
            )
        _check_positive_int(self.steps, f"{where}.steps")
        _check_positive_int(self.batch_size, f"{where}.batch_size")
        _check_positive(self.lr, f"{where}.lr")
        _check_positive(self.temperature, f"{where}.temperature")
        self.delta.validate(f"{where}.delta")
        return self


def schedule_from_dict(raw: Any, where: str = "schedule") -> ScheduleConfig:
    """Build and validate a :class:`ScheduleConfig`."""
    return _build(ScheduleConfig, _to_dict(raw), where).validate(where)


def distill_from_dict(raw: Any, where: str = "distill") -> DistillConfig:
    """Build and validate a :class:`DistillConfig`."""
    d = _to_dict(raw)
    delta = schedule_from_dict(d.pop("delta", {"length": d.get("steps", 10000)}), f"{where}.delta")
    return dataclasses.replace(_build(DistillConfig, d, where), delta=delta).validate(where)


@dataclass(frozen=True)
class ImitationConfig:
    """Supervised imitation of the oracle's labels (DIL, seed 002)."""

    episodes: int = 40
    """Episodes simulated per data-collection round."""
    dagger_rounds: int = 1
    """Extra collection rounds with the current network as behaviour policy (labels still from
    the oracle), so it also learns the states it visits itself (DAgger)."""
    steps: int = 3000
    """Adam steps of the first round (each DAgger round adds half as many)."""
    batch_size: int = 256
    """Samples per optimiser step."""
    lr: float = 1e-3
    """Adam learning rate (KECO: 0.001)."""
    weight_decay: float = 0.0
    """Adam L2 penalty."""
    targets: TargetConfig = field(default_factory=TargetConfig)
    """Training targets from the oracle's costs."""

    def validate(self, where: str = "imitation") -> ImitationConfig:
        for name in ("episodes", "steps", "batch_size"):
            _check_positive_int(getattr(self, name), f"{where}.{name}")
        if not isinstance(self.dagger_rounds, int) or self.dagger_rounds < 0:
            raise ConfigError(
                f"{where}.dagger_rounds must be an integer >= 0, got {self.dagger_rounds!r}"
            )
        _check_positive(self.lr, f"{where}.lr")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"{where}.weight_decay must be >= 0, got {self.weight_decay!r}")
        self.targets.validate(f"{where}.targets")
        return self


@dataclass(frozen=True)
class D3QNConfig:
    """Double DQN with dueling heads, shared across devices (KD-D3QN §5.2)."""

    episodes: int = 60
    """Training episodes in total (simulated ``parallel_episodes`` at a time)."""
    parallel_episodes: int = 4
    """Episodes simulated at once between learning phases."""
    gamma: float = 0.9
    """Discount between a device's consecutive tasks (Tang & Wong: 0.9)."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """Transitions per optimiser step."""
    buffer_size: int = 100000
    """Replay memory, transitions."""
    updates_per_episode: int = 40
    """Optimiser steps after each simulated episode."""
    target_every: int = 200
    """Optimiser steps between copies of the online network into the target network."""
    eps_start: float = 1.0
    """ε of ε-greedy at the first episode."""
    eps_end: float = 0.02
    """ε after ``eps_decay_fraction`` of the episodes."""
    eps_decay_fraction: float = 0.6
    """Fraction of the episodes over which ε decays linearly."""
    heuristic_prob: float = 0.5
    """KD-D3QN's heuristic-guided exploration: an exploring task takes the ``heuristic``
    policy's action with this probability, else a uniform random one (0 = plain ε-greedy)."""
    heuristic: str = "greedy"
    """Policy of ``common.mec.policies`` that guides exploration."""
    grad_clip: float = 10.0
    """Max global gradient norm."""
    reward_scale: float = 0.1
    """Rewards are multiplied by this before learning (QoE rewards are O(10–40))."""

    def validate(self, where: str = "d3qn") -> D3QNConfig:
        for name in ("episodes", "parallel_episodes", "batch_size", "buffer_size", "target_every"):
            _check_positive_int(getattr(self, name), f"{where}.{name}")
        if not isinstance(self.updates_per_episode, int) or self.updates_per_episode < 0:
            raise ConfigError(f"{where}.updates_per_episode must be an integer >= 0")
        for name in ("gamma", "eps_start", "eps_end", "eps_decay_fraction", "heuristic_prob"):
            _check_unit(getattr(self, name), f"{where}.{name}")
        for name in ("lr", "grad_clip", "reward_scale"):
            _check_positive(getattr(self, name), f"{where}.{name}")
        return self


@dataclass(frozen=True)
class DDPGConfig:
    """DDPG-based offloading (KECO's DRL comparison): an actor scores every action (continuous
    outputs), the device takes the best-scored one; a critic Q(s, scores) learns from the
    simulator's per-task rewards and the actor follows the critic's gradient."""

    episodes: int = 60
    """Training episodes in total (simulated ``parallel_episodes`` at a time)."""
    parallel_episodes: int = 4
    """Episodes simulated at once between learning phases."""
    gamma: float = 0.3
    """Discount between a device's consecutive tasks. Lower than D3QN's 0.9: with 0.9 the critic
    overestimated (Q above the largest possible return) and 5 seeds on ``seed001`` averaged QoE 17
    (7..24); with 0.3 (and the smaller buffer below) 4 seeds gave 23.5..26.4."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic."""
    batch_size: int = 256
    """Transitions per optimiser step."""
    buffer_size: int = 20000
    """Replay memory, transitions (about 3 batches of 4 ``seed001`` episodes). The other devices
    are part of each device's environment and change with the shared actor, so old transitions
    describe a different environment; a short memory made training less erratic."""
    updates_per_episode: int = 40
    """Optimiser steps (critic and actor) after each simulated episode."""
    tau: float = 0.01
    """Polyak factor of the soft target updates."""
    noise_start: float = 0.5
    """Std of the Gaussian exploration noise added to the action scores at the first episode."""
    noise_end: float = 0.05
    """Noise std after ``noise_decay_fraction`` of the episodes."""
    noise_decay_fraction: float = 0.6
    """Fraction of the episodes over which the noise decays linearly."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of the actor and the critic MLPs."""
    grad_clip: float = 10.0
    """Max global gradient norm."""
    reward_scale: float = 0.1
    """Rewards are multiplied by this before learning."""

    def validate(self, where: str = "ddpg") -> DDPGConfig:
        for name in ("episodes", "parallel_episodes", "batch_size", "buffer_size"):
            _check_positive_int(getattr(self, name), f"{where}.{name}")
        if not isinstance(self.updates_per_episode, int) or self.updates_per_episode < 0:
            raise ConfigError(f"{where}.updates_per_episode must be an integer >= 0")
        for name in ("gamma", "tau", "noise_decay_fraction"):
            _check_unit(getattr(self, name), f"{where}.{name}")
        for name in ("actor_lr", "critic_lr", "grad_clip", "reward_scale"):
            _check_positive(getattr(self, name), f"{where}.{name}")
        for name in ("noise_start", "noise_end"):
            if not _finite(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name} must be >= 0, got {getattr(self, name)!r}")
        object.__setattr__(self, "hidden", _as_ints(self.hidden, f"{where}.hidden"))
        return self


def ddpg_from_dict(raw: Any, where: str = "ddpg") -> DDPGConfig:
    """Build and validate a :class:`DDPGConfig`."""
    return _build(DDPGConfig, _to_dict(raw), where).validate(where)


def imitation_from_dict(raw: Any, where: str = "imitation") -> ImitationConfig:
    """Build and validate an :class:`ImitationConfig`."""
    d = _to_dict(raw)
    targets = targets_from_dict(d.pop("targets", {}), f"{where}.targets")
    return dataclasses.replace(_build(ImitationConfig, d, where), targets=targets).validate(where)


def d3qn_from_dict(raw: Any, where: str = "d3qn") -> D3QNConfig:
    """Build and validate a :class:`D3QNConfig`."""
    return _build(D3QNConfig, _to_dict(raw), where).validate(where)


@dataclass(frozen=True)
class DistillTablesConfig:
    """``experiment=distill_tables``: KD-D3QN's Tables 1–3 on a centralised teacher/student."""

    task: str = "distill_tables"
    """Dispatch key of ``experiments.run``."""
    teacher_training: str = "imitation"
    """How the teacher (``cfg.model``) is trained: ``imitation`` of the oracle (DIL),
    ``d3qn`` from scratch, or ``d3qn_warm`` (D3QN fine-tuning of the imitation teacher)."""
    student_ratio: float = 0.4
    """Ratio of the student of Tables 1 and 3 (KD-D3QN's choice)."""
    student_arch: str | None = None
    """Student architecture; ``None`` = the teacher's, scaled by the ratio."""
    ratios: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
    """Rows of Table 2."""
    distill_checkpoints: tuple[int, ...] = (500, 1000, 2000, 5000, 10000, 20000)
    """Rows of Table 1: the student of one distillation run, evaluated after these steps."""
    distill_episodes: int = 40
    """Episodes of teacher-visited states in the offline distillation dataset."""
    eval_episodes: int = 50
    """Evaluation episodes of every table cell (mean ± std over them)."""
    eval_seed: int = 10000
    """Seed of the evaluation episodes (the same for every policy)."""
    heuristics: tuple[str, ...] = ("all_local", "all_offload", "random", "greedy", "load_balance")
    """Reference rows (the oracle is always added)."""
    scratch: bool = True
    """Also train the student network from scratch with D3QN (the "without distillation" row)."""
    int8: bool = True
    """Also evaluate the int8 dynamically quantised student (DDLRO)."""
    latency_reps: int = 2000
    """Batch-1 forward passes per latency measurement (median reported)."""
    agreement_states: int = 20000
    """States on which the int8 and float students' decisions are compared."""
    imitation: ImitationConfig = field(default_factory=ImitationConfig)
    """Teacher imitation training."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Offline distillation (``steps`` is used by Table 2 and 3; Table 1 runs to the largest
    checkpoint)."""
    d3qn: D3QNConfig = field(default_factory=D3QNConfig)
    """Teacher D3QN training (``teacher_training`` = d3qn / d3qn_warm)."""
    scratch_d3qn: D3QNConfig = field(default_factory=D3QNConfig)
    """D3QN training of the student network from scratch."""

    def validate(self) -> DistillTablesConfig:
        w = "experiment"
        if self.teacher_training not in TEACHER_TRAINING:
            raise ConfigError(
                f"{w}.teacher_training must be one of {list(TEACHER_TRAINING)}, "
                f"got {self.teacher_training!r}"
            )
        if self.student_arch is not None and self.student_arch not in MODEL_ARCHS:
            raise ConfigError(
                f"{w}.student_arch must be null or one of {list(MODEL_ARCHS)}, "
                f"got {self.student_arch!r}"
            )
        if not _finite(self.student_ratio) or not 0 < self.student_ratio <= 4:
            raise ConfigError(f"{w}.student_ratio must be in (0, 4], got {self.student_ratio!r}")
        if any(not 0 < r <= 4 for r in self.ratios):
            raise ConfigError(f"{w}.ratios must be in (0, 4], got {list(self.ratios)}")
        _as_ints(self.distill_checkpoints, f"{w}.distill_checkpoints")
        for name in ("distill_episodes", "eval_episodes", "latency_reps", "agreement_states"):
            _check_positive_int(getattr(self, name), f"{w}.{name}")
        if not isinstance(self.eval_seed, int):
            raise ConfigError(f"{w}.eval_seed must be an integer, got {self.eval_seed!r}")
        return self


def distill_tables_from_dict(raw: Any) -> DistillTablesConfig:
    """Build and validate a :class:`DistillTablesConfig` (``conf/experiment/distill_tables``)."""
    d = _to_dict(raw)
    subs = {
        "imitation": imitation_from_dict(d.pop("imitation", {}), "experiment.imitation"),
        "distill": distill_from_dict(d.pop("distill", {}), "experiment.distill"),
        "d3qn": d3qn_from_dict(d.pop("d3qn", {}), "experiment.d3qn"),
        "scratch_d3qn": d3qn_from_dict(d.pop("scratch_d3qn", {}), "experiment.scratch_d3qn"),
    }
    if "ratios" in d:
        d["ratios"] = tuple(float(r) for r in _as_floats_named(d["ratios"], "experiment.ratios"))
    if "distill_checkpoints" in d:
        d["distill_checkpoints"] = _as_ints(
            d["distill_checkpoints"], "experiment.distill_checkpoints"
        )
    if "heuristics" in d:
        d["heuristics"] = tuple(str(h) for h in d["heuristics"])
    if "student_ratio" in d and _finite(d["student_ratio"]):
        d["student_ratio"] = float(d["student_ratio"])
    cfg = _build(DistillTablesConfig, d, "experiment")
    return dataclasses.replace(cfg, **subs).validate()


def _as_floats_named(value: Any, name: str) -> tuple[float, ...]:
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and value
        and all(_finite(v) for v in value)
    ):
        return tuple(float(v) for v in value)
    raise ConfigError(f"{name} must be a non-empty list of numbers, got {value!r}")


# [section: models]


# --------------------------------------------------------------------------------------------
# Federation (conf/federation/*.yaml, conf/strategy/*.yaml, experiment=federation)
# --------------------------------------------------------------------------------------------
STRATEGIES = ("keco", "fedavg", "feddistill", "fedmeta2ag")
"""``keco`` and ``feddistill`` go through the encrypted KECO protocol; the others send the
student's weights in plaintext through Flower's FedAvg message format."""
PLAINTEXT_STRATEGIES = ("fedavg", "fedmeta2ag")
LOGITS_SOURCES = ("teacher", "student")


@dataclass(frozen=True)
class FederationConfig:
    """Who takes part and how the simulation is run (``conf/federation/*.yaml``)."""

    num_clients: int = 10
    """Virtual clients (Flower SuperNodes); each is one group of devices with its own profile."""
    rounds: int = 10
    """Federated rounds."""
    fraction_train: float = 1.0
    """Fraction of the connected clients sampled for training each round."""
    fraction_evaluate: float = 1.0
    """Fraction sampled for federated evaluation each round."""
    min_replies: int = 1
    """A round fails (clear error) when fewer usable train replies remain after validation."""
    heterogeneity: float = 0.5
    """0 = IID clients; 1 = strongly non-IID (arrival rate, task sizes, power modes, channel
    quality, computation density and device speed all differ per client)."""
    client_cpus: float = 1.0
    """Ray CPUs per virtual client (2 cores: 1.0 runs two clients at once)."""
    ray_address: str | None = None
    """Attach to an existing Ray cluster (passed to ``ray.init``); ``None`` starts a local one."""
    timeout_s: float = 3600.0
    """Seconds the server waits for the replies of one round."""
    min_available_nodes: int | None = None
    """Connected clients the server waits for before a round (``None``: all ``num_clients``);
    a deployment sets it below ``num_clients`` so that the rounds go on when a device drops
    out."""
    slow_fraction: float = 0.0
    """Share of the clients that are slow devices (stragglers): their training speed is
    multiplied by ``slow_factor``. Which clients are slow is a seeded draw of exactly
    ``round(slow_fraction × num_clients)`` partitions."""
    slow_factor: float = 0.25
    """Largest speed multiplier of a slow client's compute-time model (each slow client draws
    one log-uniformly in ``[slow_factor / slow_spread, slow_factor]``)."""
    slow_spread: float = 100.0
    """Ratio of the fastest to the slowest slow device (>= 1)."""
    uplink_mbps: float = 20.0
    """Uplink rate of the clients' updates, Mbit/s: a round's simulated time is its slowest
    used client's compute time plus the time to upload its reply."""

    @property
    def available(self) -> int:
        """Clients that must be connected before a round."""
        return self.num_clients if self.min_available_nodes is None else self.min_available_nodes

    def validate(self) -> FederationConfig:
        _check_positive_int(self.num_clients, "federation.num_clients")
        _check_positive_int(self.rounds, "federation.rounds")
        _check_positive_int(self.min_replies, "federation.min_replies")
        for name in ("fraction_train", "fraction_evaluate"):
            v = getattr(self, name)
            if not _finite(v) or not 0.0 < v <= 1.0:
                raise ConfigError(f"federation.{name} must be in (0, 1], got {v!r}")
        _check_unit(self.heterogeneity, "federation.heterogeneity")
        _check_unit(self.slow_fraction, "federation.slow_fraction")
        _check_positive(self.slow_factor, "federation.slow_factor")
        if not _finite(self.slow_spread) or self.slow_spread < 1:
            raise ConfigError(f"federation.slow_spread must be >= 1, got {self.slow_spread!r}")
        _check_positive(self.uplink_mbps, "federation.uplink_mbps")
        _check_positive(self.client_cpus, "federation.client_cpus")
        _check_positive(self.timeout_s, "federation.timeout_s")
        if self.min_available_nodes is not None and (
            not isinstance(self.min_available_nodes, int)
            or not 1 <= self.min_available_nodes <= self.num_clients
        ):
            raise ConfigError(
                f"federation.min_available_nodes must be an integer in [1, num_clients = "
                f"{self.num_clients}] or null, got {self.min_available_nodes!r}"
            )
        sampled = max(1, math.ceil(self.available * self.fraction_train))
        if self.min_replies > sampled:
            raise ConfigError(
                f"federation.min_replies ({self.min_replies}) exceeds the clients sampled per "
                f"round ({sampled} = num_clients × fraction_train); lower it or sample more"
            )
        return self


@dataclass(frozen=True)
class LocalConfig:
    """What each client does in a round (``strategy.local``)."""

    episodes: int = 2
    """Fresh episodes simulated per round on the client's own device profile."""
    buffer_size: int = 4000
    """Bounded local buffer of labelled tasks (incremental learning; oldest dropped first)."""
    epochs: int = 20
    """Passes over the buffer per round."""
    batch_size: int = 256
    """Samples per optimiser step."""
    lr: float = 3e-3
    """Adam learning rate (KECO uses 0.001 over far more steps)."""
    explore: float = 0.1
    """Probability that the behaviour policy takes a random action while collecting data."""
    expert_mix: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(kind="linear", start=0.9, floor=0.1, length=10)
    )
    """Probability β_t that the behaviour policy follows the oracle in round t (DAgger's β),
    a schedule over rounds: early rounds follow the oracle (good states), later ones the
    student (the states it visits itself). ``conf/strategy/keco.yaml`` spans the run's rounds."""
    train_loads: tuple[float, ...] | None = None
    """Load multipliers cycled over the episodes a client simulates (each scales its devices'
    arrival probabilities), so a policy learns the loads it will meet; ``None``: the
    scenario's own load only."""
    targets: TargetConfig = field(default_factory=TargetConfig)
    """Training targets from the oracle's costs."""
    logits_source: str = "teacher"
    """Network whose per-class mean logits form the client's soft labels: ``teacher`` (KECO's
    HE section) or ``student``."""
    eval_episodes: int = 2
    """Fresh episodes per client in federated evaluation."""
    speed_gflops: float = 2.0
    """Median device training speed of the compute-time model, GFLOP/s (clients spread around
    it with the heterogeneity)."""

    def validate(self) -> LocalConfig:
        for name in ("episodes", "buffer_size", "epochs", "batch_size", "eval_episodes"):
            _check_positive_int(getattr(self, name), f"strategy.local.{name}")
        _check_positive(self.lr, "strategy.local.lr")
        _check_positive(self.speed_gflops, "strategy.local.speed_gflops")
        _check_unit(self.explore, "strategy.local.explore")
        self.expert_mix.validate("strategy.local.expert_mix")
        if self.explore + max(self.expert_mix.start, self.expert_mix.floor) > 1.0:
            raise ConfigError("strategy.local.explore + strategy.local.expert_mix must be <= 1")
        if self.train_loads is not None:
            loads = self.train_loads
            if not loads or any(not _finite(v) or v <= 0 for v in loads):
                raise ConfigError(
                    f"strategy.local.train_loads must be null or a non-empty list of positive "
                    f"load multipliers, got {loads!r}"
                )
        self.targets.validate("strategy.local.targets")
        if self.logits_source not in LOGITS_SOURCES:
            raise ConfigError(
                f"strategy.local.logits_source must be one of {list(LOGITS_SOURCES)}, "
                f"got {self.logits_source!r}"
            )
        return self


def local_from_dict(raw: Any) -> LocalConfig:
    """Build (not yet validate) a :class:`LocalConfig` from ``strategy.local``."""
    d = _to_dict(raw)
    where = "strategy.local"
    mix = d.pop("expert_mix", None)
    if isinstance(mix, (int, float)) and not isinstance(mix, bool):  # a constant β
        mix = {"kind": "constant", "start": mix, "floor": mix, "length": 1}
    subs: dict[str, Any] = {"targets": targets_from_dict(d.pop("targets", {}), f"{where}.targets")}
    if mix is not None:
        subs["expert_mix"] = schedule_from_dict(mix, f"{where}.expert_mix")
    loads = d.get("train_loads")
    if loads is not None:
        d["train_loads"] = _as_floats_named(loads, f"{where}.train_loads")
    return dataclasses.replace(_build(LocalConfig, d, where), **subs)


@dataclass(frozen=True)
class MetaConfig:
    """FedMeta2Ag's local MAML (``strategy.meta``; first-order MAML on the client's buffer)."""

    tasks: int = 20
    """Meta-tasks per round: each draws a support and a query batch from the buffer."""
    inner_steps: int = 2
    """Gradient steps on the support batch (the paper: one or two)."""
    inner_lr: float = 0.01
    """Inner-loop (adaptation) learning rate α."""
    outer_lr: float = 0.003
    """Outer-loop (meta) learning rate β."""
    adapt_steps: int = 10
    """Fine-tuning steps on the client's own buffer before it evaluates (meta-test)."""
    adapt_lr: float = 0.003
    """Learning rate of that fine-tuning."""

    def validate(self) -> MetaConfig:
        for name in ("tasks", "inner_steps"):
            _check_positive_int(getattr(self, name), f"strategy.meta.{name}")
        if not isinstance(self.adapt_steps, int) or self.adapt_steps < 0:
            raise ConfigError("strategy.meta.adapt_steps must be an integer >= 0")
        for name in ("inner_lr", "outer_lr", "adapt_lr"):
            _check_positive(getattr(self, name), f"strategy.meta.{name}")
        return self


KNOWLEDGE_KINDS = ("proxy", "class_table")
LATE_POLICIES = ("wait", "drop")


@dataclass(frozen=True)
class ProxyConfig:
    """The shared proxy set of ``knowledge: proxy`` (``strategy.proxy``; see
    :mod:`common.fed.proxy`)."""

    size: int = 512
    """Proxy states; a client uploads ``size × (M + 1)`` logits per round."""
    episodes: int | None = None
    """Public episodes the states are drawn from (at the run's training loads); ``None``: as
    many as it takes to hold twice ``size`` tasks."""
    policy: str = "greedy"
    """Public heuristic that runs those episodes."""

    def validate(self) -> ProxyConfig:
        _check_positive_int(self.size, "strategy.proxy.size")
        if self.episodes is not None:
            _check_positive_int(self.episodes, "strategy.proxy.episodes")
        if self.policy not in HEURISTIC_METHODS:
            raise ConfigError(
                f"strategy.proxy.policy must be one of {list(HEURISTIC_METHODS)}, "
                f"got {self.policy!r}"
            )
        return self


@dataclass(frozen=True)
class StrategyConfig:
    """The server strategy and the round schedule (``conf/strategy/*.yaml``)."""

    name: str = "keco"
    """``keco`` (encrypted weights + soft labels, Δ from late clients), ``feddistill`` (the
    same protocol with soft labels only: every client keeps its own model), ``fedavg``
    (Flower's FedAvg of the student, hard labels only, plaintext) or ``fedmeta2ag`` (local
    MAML, edge-level then cloud-level averaging, plaintext)."""
    correction: bool = True
    """KECO's soft-label correction Δ from late clients (off for the ablation)."""
    delta: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(length=10))
    """δ_t over rounds: weight of the hard-label loss (KECO: 3:1 early, 1:3 late)."""
    temperature: float = 2.0
    """Distillation temperature T."""
    knowledge: str = "proxy"
    """What the soft labels are: ``proxy`` (every client's logits on the shared proxy set,
    per-sample knowledge) or ``class_table`` (per-class mean logits, indexed by the label:
    class-dependent label smoothing, kept as the ablation)."""
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    """The shared proxy set (``knowledge: proxy``)."""
    soft_cap: float = 1.0
    """Largest weight of the soft term relative to the hard one: the loss uses
    ``min((1 − δ)·T², soft_cap·δ)`` for the soft term."""
    global_kd_steps: int = 0
    """KECO's steps 5–6 ("Implementation of KECO"): after averaging, distil the global model
    towards the global soft labels on the proxy set for this many minibatches before it is
    used (0: off). Under CKKS each client does it right after decrypting (every client gets
    the same model: the step is seeded by the round alone)."""
    server_distill: bool = False
    """With ``he=off``, the server does the ``global_kd_steps`` itself after aggregating and
    sends the distilled model (the same code and result; clients then skip it)."""
    deadline_s: float | None = None
    """Budget of simulated local compute per round, seconds; slower clients are late (set y).
    ``None``: no deadline. The same compute-time model and deadline apply to every strategy."""
    late: str = "wait"
    """What ``fedavg`` and ``fedmeta2ag`` do with a client over the deadline: ``wait`` for it
    (the round lasts as long as the slowest sampled client) or ``drop`` its update (the round
    goes on with the on-time clients). KECO and FedDistill use late clients' logits instead."""
    local: LocalConfig = field(default_factory=LocalConfig)
    edge_servers: int = 4
    """``fedmeta2ag``: MEC-L edge servers; client ``i`` belongs to server ``i mod edge_servers``."""
    meta: MetaConfig = field(default_factory=MetaConfig)
    """``fedmeta2ag``: the local MAML."""

    def validate(self) -> StrategyConfig:
        if self.name not in STRATEGIES:
            raise ConfigError(f"strategy.name must be one of {list(STRATEGIES)}, got {self.name!r}")
        _check_positive_int(self.edge_servers, "strategy.edge_servers")
        self.meta.validate()
        if not isinstance(self.correction, bool):
            raise ConfigError(f"strategy.correction must be true or false, got {self.correction!r}")
        self.delta.validate("strategy.delta")
        if self.name in PLAINTEXT_STRATEGIES and (
            self.delta.kind != "constant" or self.delta.start != 1.0
        ):
            raise ConfigError(
                f"strategy={self.name} trains on hard labels only: strategy.delta must stay "
                "{kind: constant, start: 1.0}"
            )
        _check_positive(self.temperature, "strategy.temperature")
        if self.knowledge not in KNOWLEDGE_KINDS:
            raise ConfigError(
                f"strategy.knowledge must be one of {list(KNOWLEDGE_KINDS)}, got {self.knowledge!r}"
            )
        self.proxy.validate()
        if not _finite(self.soft_cap) or self.soft_cap < 0:
            raise ConfigError(f"strategy.soft_cap must be a number >= 0, got {self.soft_cap!r}")
        if not isinstance(self.global_kd_steps, int) or self.global_kd_steps < 0:
            raise ConfigError(
                f"strategy.global_kd_steps must be an integer >= 0, got {self.global_kd_steps!r}"
            )
        if self.global_kd_steps and self.knowledge != "proxy":
            raise ConfigError(
                "strategy.global_kd_steps distils on the proxy set: it needs "
                "strategy.knowledge=proxy"
            )
        if self.deadline_s is not None:
            _check_positive(self.deadline_s, "strategy.deadline_s")
        if self.late not in LATE_POLICIES:
            raise ConfigError(
                f"strategy.late must be one of {list(LATE_POLICIES)}, got {self.late!r}"
            )
        self.local.validate()
        return self


@dataclass(frozen=True)
class FederatedRunConfig:
    """Everything a federated run needs, on the server and on every client."""

    scenario: ScenarioConfig
    student: ModelConfig
    teacher: ModelConfig
    teacher_training: ImitationConfig
    he: HEConfig
    federation: FederationConfig
    strategy: StrategyConfig
    seed: int = 0
    """Seeds everything: initial model, client sampling, client data and training."""
    run_dir: str = "."
    """The server's directory: ``public.ctx``, checkpoints and results (never a secret key)."""
    client_dir: str = ""
    """The clients' (and key owner's) side of a simulation or local ``flwr run``: ``secret.ctx``,
    the teacher and the clients' local states. Default ``<run_dir>-clients``, beside the run
    directory and never inside it; a deployed SuperNode names its own files instead."""
    final_eval_episodes: int = 20
    """Held-out episodes of the final comparison (run by the key owner after the rounds)."""
    resume: bool = False
    """Continue from ``run_dir/checkpoint`` when it exists."""
    eval_seed: int = 50000
    """Seed of the held-out episodes of the final comparison."""
    heuristics: tuple[str, ...] = ("all_local", "all_offload", "random", "greedy", "load_balance")
    """Policies the final student is compared with (the oracle always is)."""

    @property
    def states_dir(self) -> Path:
        """Where simulated clients keep their local state between rounds."""
        return Path(self.client_dir) / "states"

    def at(self, run_dir: str | Path, client_dir: str | Path | None = None) -> FederatedRunConfig:
        """This config with another run directory (and its clients' directory, by default
        ``<run_dir>-clients``)."""
        clients = default_client_dir(run_dir) if client_dir is None else str(client_dir)
        return dataclasses.replace(self, run_dir=str(run_dir), client_dir=clients).validate()

    def validate(self) -> FederatedRunConfig:
        if not self.client_dir:
            raise ConfigError("client_dir is empty: build the config with federated_from_dict")
        server, clients = Path(self.run_dir).resolve(), Path(self.client_dir).resolve()
        if clients == server or server in clients.parents:
            raise ConfigError(
                f"client_dir={self.client_dir!r} is the run directory or inside it; the server's "
                f"run directory must never hold the clients' secret key: put it beside it"
            )
        if self.strategy.name not in PLAINTEXT_STRATEGIES:  # a sum holds at most every client
            self.he.check_run(self.federation.num_clients, self.strategy.local.buffer_size)
        if self.strategy.server_distill and (self.he.enabled or not self.strategy.global_kd_steps):
            raise ConfigError(
                "strategy.server_distill needs he=off (a CKKS server cannot see the model) and "
                "strategy.global_kd_steps > 0"
            )
        if self.strategy.name in PLAINTEXT_STRATEGIES and self.he.enabled:
            raise ConfigError(
                f"strategy={self.strategy.name} sends plaintext weights through Flower's "
                "message format; use he=off with it (keco and feddistill are the encrypted ones)"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        _check_positive_int(self.final_eval_episodes, "experiment.final_eval_episodes")
        st, sc = self.strategy, self.scenario
        if st.knowledge == "proxy" and st.proxy.episodes is not None:
            loads = st.local.train_loads or (1.0,)
            p = sc.effective_arrival_prob
            expected = sum(
                sc.n_devices * sc.n_slots * min(1.0, p * loads[i % len(loads)])
                for i in range(st.proxy.episodes)
            )
            if expected < 2 * st.proxy.size:
                raise ConfigError(
                    f"strategy.proxy.size={st.proxy.size} needs about twice as many tasks in the "
                    f"proxy episodes, but strategy.proxy.episodes={st.proxy.episodes} hold about "
                    f"{expected:.0f}: raise strategy.proxy.episodes or lower strategy.proxy.size"
                )
        from common.mec.policies import POLICIES

        unknown = [h for h in self.heuristics if h not in POLICIES]
        if unknown:
            raise ConfigError(
                f"experiment.heuristics: unknown policies {unknown}; valid are {sorted(POLICIES)}"
            )
        return self


def default_client_dir(run_dir: str | Path) -> str:
    """``<run_dir>-clients``: the clients' directory beside the server's run directory."""
    path = Path(run_dir).resolve()
    return str(path.with_name(path.name + "-clients"))


def federated_from_dict(
    raw: Any, run_dir: str | Path | None = None, client_dir: str | Path | None = None
) -> FederatedRunConfig:
    """Build and validate a :class:`FederatedRunConfig` from the composed Hydra config.

    ``client_dir`` defaults to the config's ``client_dir`` or else ``<run_dir>-clients``."""
    d = _to_dict(raw)
    exp = _to_dict(d.get("experiment"))
    strategy = _to_dict(d.get("strategy"))
    delta = schedule_from_dict(strategy.pop("delta", {}), "strategy.delta")
    local = local_from_dict(strategy.pop("local", {}))
    meta = _build(MetaConfig, _to_dict(strategy.pop("meta", {})), "strategy.meta")
    proxy = _build(ProxyConfig, _to_dict(strategy.pop("proxy", {})), "strategy.proxy")
    strat = dataclasses.replace(
        _build(StrategyConfig, strategy, "strategy"), delta=delta, local=local, meta=meta,
        proxy=proxy,
    )  # fmt: skip
    hints = typing.get_type_hints(FederatedRunConfig)
    run_dir = run_dir if run_dir is not None else d.get("run_dir", ".")
    cfg = FederatedRunConfig(
        scenario=scenario_from_dict(d.get("scenario")),
        student=model_from_dict(d.get("student")),
        teacher=model_from_dict(d.get("model")),
        teacher_training=imitation_from_dict(exp.get("teacher_training", {}), "teacher_training"),
        he=he_from_dict(d.get("he")),
        federation=_build(FederationConfig, _to_dict(d.get("federation")), "federation").validate(),
        strategy=strat.validate(),
        seed=_typed(d.get("seed", 0), int, "seed"),
        run_dir=str(run_dir),
        client_dir=str(client_dir or d.get("client_dir") or default_client_dir(run_dir)),
        **{
            name: _typed(exp[name], hints[name], f"experiment.{name}")
            for name in ("final_eval_episodes", "resume", "eval_seed", "heuristics")
            if name in exp
        },
    )
    return cfg.validate()


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> Any:
    """Compose the Hydra config of ``conf/`` with ``overrides`` (outside ``@hydra.main``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # e.g. inside @hydra.main: keep its state
        return hydra_compose(config_name=config_name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def federated_from_run_config(run_config: Mapping[str, Any]) -> FederatedRunConfig:
    """The run config of ``flwr run .``: ``overrides`` (Hydra overrides, space separated),
    ``run-dir`` (the server's) and ``client-dir`` (the clients'; empty: ``<run-dir>-clients``)
    from ``[tool.flwr.app.config]`` or ``--run-config``."""
    import shlex

    overrides = shlex.split(str(run_config.get("overrides", "")))
    run_dir = str(run_config.get("run-dir", "outputs/flwr-run"))
    client_dir = str(run_config.get("client-dir", "")) or None
    raw = compose(["experiment=federation", *overrides])
    return federated_from_dict(raw, run_dir, client_dir)


# [section: federation]


# --------------------------------------------------------------------------------------------
# Studies: the papers' experiments as sweeps (conf/experiment/<study>.yaml, task: study)
# --------------------------------------------------------------------------------------------
HEURISTIC_METHODS = ("all_local", "all_offload", "random", "greedy", "load_balance", "oracle")
FEDERATED_METHODS: dict[str, tuple[str, ...]] = {
    "keco": (),
    "keco_plain": ("he=off",),
    "keco_no_delta": ("strategy=keco_no_delta",),
    "keco_fixed_delta": ("strategy=keco_fixed_delta",),
    "keco_student_logits": ("strategy=keco_student_logits",),
    "keco_class_table": ("strategy.knowledge=class_table",),
    "keco_global_kd": ("strategy.global_kd_steps=100",),
    "fedavg": ("strategy=fedavg", "he=off"),
    "fedavg_wait": ("strategy=fedavg", "he=off", "strategy.late=wait"),
    "fedavg_drop": ("strategy=fedavg", "he=off", "strategy.late=drop"),
    "feddistill": ("strategy=feddistill",),
    "fedmeta2ag": ("strategy=fedmeta2ag", "he=off", "scenario.edge_allocation=kkt"),
}
"""Federated methods and the Hydra overrides that turn the study's config into each one."""
TRAINED_METHODS = ("centralized", "cnn", "d3qn", "d3qn_student", "ddpg")
"""Methods trained without federation (see ``experiments.baselines``)."""
METHODS = (*FEDERATED_METHODS, *TRAINED_METHODS, *HEURISTIC_METHODS)
SWEEP_TARGETS = ("scenario", "federation", "timeline")


@dataclass(frozen=True)
class SweepConfig:
    """What a study varies (``experiment.sweep``)."""

    target: str = "scenario"
    """``scenario``: train every method once, evaluate it at every value of ``key`` (a
    ``scenario.*`` field); ``federation``: train the federated methods once per value of
    ``key`` (any config key, e.g. ``federation.num_clients``) and record their federated
    evaluation; ``timeline``: evaluate once per facet and record ``metric`` per time bucket."""
    key: str | None = None
    """Dotted config key the values are written to."""
    x: str = "x"
    """Name of the x column in the records (and the figure's x axis)."""
    values: tuple[Any, ...] = ()
    """Values of ``key``."""
    x_is_volume: bool = False
    """Record x as the expected tasks per episode (arrival probability × devices × slots)
    instead of the raw value: KECO's "data scale"."""
    bucket_s: float = 10.0
    """``timeline``: width of a time bucket, seconds."""

    def validate(self) -> SweepConfig:
        if self.target not in SWEEP_TARGETS:
            raise ConfigError(
                f"experiment.sweep.target must be one of {list(SWEEP_TARGETS)}, got {self.target!r}"
            )
        if self.target != "timeline":
            if not self.key or not self.values:
                raise ConfigError("experiment.sweep needs a key and a non-empty list of values")
            if self.target == "scenario" and not self.key.startswith("scenario."):
                raise ConfigError(
                    f"experiment.sweep.key must be a scenario.* field for target=scenario, "
                    f"got {self.key!r}"
                )
        _check_positive(self.bucket_s, "experiment.sweep.bucket_s")
        return self


@dataclass(frozen=True)
class StudyConfig:
    """``task: study``: train methods, sweep a variable, record tidy rows (one per method × x
    × facet) into ``results.json`` for ``python -m experiments.report``."""

    name: str
    """The study (``conf/experiment/<name>.yaml``)."""
    methods: tuple[str, ...]
    """Methods compared (:data:`METHODS`)."""
    sweep: SweepConfig
    facet: str | None = None
    """Name of the facet column (e.g. ``pressure``); ``None``: no facets."""
    facets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Facet value → dotted overrides (``scenario.*`` for scenario/timeline sweeps)."""
    eval_episodes: int = 10
    """Evaluation episodes per (method, x, facet); the same seeds for every method."""
    eval_seed: int = 50000
    """Seed of the evaluation episodes (disjoint from training seeds)."""
    eval_clients: int = 10
    """``federation`` sweeps: the clients whose devices every method is evaluated on (spread
    evenly over the partition ids; each decides with the model it would use)."""
    train_per_facet: bool = False
    """Train the methods separately in every facet's world (e.g. under CPU or memory
    pressure) instead of once on the base scenario."""
    report: dict[str, Any] = field(default_factory=dict)
    """The plot spec of ``experiments.report`` (kept as given)."""

    def validate(self) -> StudyConfig:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"experiment.methods: unknown methods {unknown}; valid methods are {list(METHODS)}"
            )
        if self.sweep.target == "federation":
            allowed = (*FEDERATED_METHODS, *HEURISTIC_METHODS)
            bad = [m for m in self.methods if m not in allowed]
            if bad:
                raise ConfigError(
                    f"experiment.methods {bad} are not federated; a sweep over {self.sweep.key} "
                    f"trains federations (valid: {list(FEDERATED_METHODS)}, with the heuristics "
                    f"{list(HEURISTIC_METHODS)} as references)"
                )
        _check_positive_int(self.eval_episodes, "experiment.eval_episodes")
        _check_positive_int(self.eval_clients, "experiment.eval_clients")
        if (self.facet is None) != (not self.facets):
            raise ConfigError("experiment.facet and experiment.facets go together")
        for value, overrides in self.facets.items():
            if not isinstance(overrides, Mapping):
                raise ConfigError(f"experiment.facets.{value} must map config keys to values")
        return self


def study_from_dict(raw: Any) -> StudyConfig:
    """Build and validate a :class:`StudyConfig` from the ``experiment`` node."""
    d = _to_dict(raw)
    hints = typing.get_type_hints(StudyConfig)
    sweep = _build(SweepConfig, _to_dict(d.get("sweep", {})), "experiment.sweep").validate()
    # the experiment node also holds the task's other settings: only the study's are read here
    picked = {
        k: _typed(v, hints[k], f"experiment.{k}")
        for k, v in d.items()
        if k in hints and k != "sweep" and v is not None
    }
    picked["methods"] = picked.get("methods") or ()
    picked["facets"] = {str(k): _to_dict(v) for k, v in (picked.get("facets") or {}).items()}
    if "name" not in picked:
        raise ConfigError("experiment.name is missing (the study's name)")
    return StudyConfig(sweep=sweep, **picked).validate()


# --------------------------------------------------------------------------------------------
# Experiment tracking (conf/logger/*.yaml) and hyperparameter search
# --------------------------------------------------------------------------------------------
LOGGERS = ("csv", "tensorboard", "wandb")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass(frozen=True)
class LoggerConfig:
    """Where a run's per-round rows, policy table and figures are tracked (``logger=...``)."""

    name: str = "csv"
    """``csv`` (files in the run directory), ``tensorboard`` (event files) or ``wandb``."""
    dir: str | None = None
    """Where the tracker writes; ``None``: inside the run directory."""
    mode: str = "offline"
    """wandb: ``offline`` (default; ``wandb sync`` uploads later), ``online`` or ``disabled``."""
    project: str = "keco-flower"
    """wandb project."""
    entity: str | None = None
    """wandb entity (user or team); ``None``: the account's default."""
    group: str | None = None
    """wandb group; ``None``: the sweep's name in a ``-m`` sweep, no group in a single run."""
    tags: tuple[str, ...] = ()
    """wandb tags."""

    def validate(self) -> LoggerConfig:
        if self.name not in LOGGERS:
            raise ConfigError(
                f"logger.name must be one of {list(LOGGERS)} (choose with logger=<name>), "
                f"got {self.name!r}"
            )
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"logger.mode must be one of {list(WANDB_MODES)}, got {self.mode!r}")
        return self


def logger_from_dict(raw: Any) -> LoggerConfig:
    """Build and validate a :class:`LoggerConfig` from the ``logger`` node (``None``: csv)."""
    d = _to_dict(raw)
    if "tags" in d:
        d["tags"] = tuple(str(t) for t in d["tags"] or ())
    return _build(LoggerConfig, d, "logger").validate()


def optimized_metric(results: Mapping[str, Any], path: str) -> float:
    """The number at dotted ``path`` of a run's results (``summary.final_qoe``): what a
    hyperparameter search optimises (``optimized_metric`` in the config)."""
    node: Any = results
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            valid = sorted(node) if isinstance(node, Mapping) else []
            raise ConfigError(
                f"optimized_metric={path!r}: the run's results have no {key!r} there; "
                f"keys at that level: {valid}"
            )
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise ConfigError(f"optimized_metric={path!r} is not a number in the results: {node!r}")
    return float(node)

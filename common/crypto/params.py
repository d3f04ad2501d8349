"""HE parameters (``conf/he/*.yaml``): ``HEConfig`` with its security and noise checks.

No TenSEAL here: the server, the config checks and the plaintext backend read it too."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.config import (
    ConfigError,
    build,
    check_positive,
    defaults_of,
    load_preset,
    register_schema,
    to_dict,
)

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
        check_positive(self.value_bound, "he.value_bound")
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
    d = to_dict(raw)
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
    return build(HEConfig, d, "he").validate()


def register_he_schema() -> None:
    """Register ``schema/he``: every field's default, where ``conf/he/`` starts."""
    register_schema("he", defaults_of(HEConfig))


def load_he(name: str, **overrides: Any) -> HEConfig:
    """Load ``conf/he/<name>.yaml`` (``ckks``, ``ckks4096``, ``off``) and apply overrides."""
    register_he_schema()
    return he_from_dict(load_preset("he", name, **overrides))

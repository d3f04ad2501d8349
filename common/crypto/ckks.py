"""CKKS through TenSEAL: contexts, key files and the CKKS backend (the only TenSEAL import)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import tenseal as ts

from common.config import HEConfig
from common.crypto.backend import Backend, params_hash
from common.crypto.payload import CryptoError

SUM_HEADROOM_BITS = 10
"""Bits of the plaintext range kept free by :meth:`CKKSBackend.encrypt` so that a sum of up to
2**10 = 1,024 uploads at the largest accepted magnitude cannot wrap around the modulus."""


def build_context(cfg: HEConfig) -> ts.Context:
    """A fresh secret CKKS context (secret + public key) for ``cfg``; no Galois/relin keys.

    The federation only adds ciphertexts, so neither Galois keys (rotations, tens of MB) nor
    relinearisation keys (multiplications) are generated.
    """
    cfg.validate()
    if not cfg.enabled:
        raise CryptoError("he.scheme is 'off': there are no keys to build")
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=cfg.poly_modulus_degree,
        coeff_mod_bit_sizes=list(cfg.coeff_mod_bit_sizes),
    )
    ctx.global_scale = 2.0**cfg.global_scale_bits
    return ctx


def serialize_context(ctx: ts.Context, *, secret: bool) -> bytes:
    """Context bytes with the public key, the secret key only if ``secret``, never Galois keys."""
    if secret and not ctx.is_private():
        raise CryptoError("cannot write a secret context from a public one (no secret key)")
    return ctx.serialize(
        save_public_key=True,
        save_secret_key=secret,
        save_galois_keys=False,
        save_relin_keys=False,
    )


def public_copy(ctx: ts.Context) -> ts.Context:
    """A copy of ``ctx`` without the secret key (what the server holds)."""
    pub = ctx.copy()
    if pub.is_private():
        pub.make_context_public()
    return pub


def key_id(ctx: ts.Context) -> str:
    """Short hash of the public part of ``ctx``; identical for ``secret.ctx`` and ``public.ctx``."""
    return hashlib.sha256(serialize_context(public_copy(ctx), secret=False)).hexdigest()[:16]


def load_context(path: str | Path) -> ts.Context:
    """Read a context file written by :func:`common.crypto.keygen.generate_keys`."""
    path = Path(path)
    if not path.is_file():
        raise CryptoError(
            f"HE context file {path} does not exist; create it with "
            f"`python -m common.crypto.keygen --he <preset> --out <dir>`"
        )
    try:
        return ts.context_from(path.read_bytes())
    except Exception as err:
        raise CryptoError(f"{path} is not a TenSEAL context ({err})") from err


class CKKSBackend(Backend):
    """CKKS vectors of N/2 slots; adds in place; decrypts only with the secret key."""

    scheme = "ckks"

    def __init__(self, context: ts.Context, cfg: HEConfig) -> None:
        cfg.validate()
        seal = context.seal_context().data
        degree = seal.key_context_data().parms().poly_modulus_degree()
        if degree != cfg.poly_modulus_degree:
            raise CryptoError(
                f"the HE context has poly_modulus_degree={degree} but he config "
                f"{cfg.name!r} says {cfg.poly_modulus_degree}; regenerate the keys or pick "
                f"the matching conf/he preset"
            )
        if context.global_scale != 2.0**cfg.global_scale_bits:
            raise CryptoError(
                f"the HE context has scale {context.global_scale:g} but he config "
                f"{cfg.name!r} says 2**{cfg.global_scale_bits}"
            )
        if not context.has_public_key():
            raise CryptoError("the HE context has no public key; regenerate the keys")
        super().__init__(cfg.slots, params_hash(cfg), key_id(context))
        self.context = context
        self._scale = 2.0**cfg.global_scale_bits
        self._fresh_parms_id = seal.first_parms_id()
        data_bits = sum(cfg.coeff_mod_bit_sizes[:-1])
        # Decryption is exact while |value|·scale < q/2 with q the product of the data primes.
        self._max_abs = 2.0 ** (data_bits - cfg.global_scale_bits - 1 - SUM_HEADROOM_BITS)

    @classmethod
    def from_file(cls, path: str | Path, cfg: HEConfig) -> CKKSBackend:
        """Load ``secret.ctx`` (clients) or ``public.ctx`` (server)."""
        return cls(load_context(path), cfg)

    @property
    def can_decrypt(self) -> bool:
        return bool(self.context.is_private())

    @property
    def max_abs_value(self) -> float:
        return self._max_abs

    def _encrypt_chunk(self, values: np.ndarray) -> ts.CKKSVector:
        return ts.ckks_vector(self.context, values.tolist())

    def _decrypt_chunk(self, chunk: ts.CKKSVector) -> np.ndarray:
        try:
            return np.asarray(chunk.decrypt(), dtype=np.float64)
        except ValueError as err:
            raise CryptoError(
                "this HE context holds no secret key (it is the server's public.ctx); only "
                "clients with secret.ctx decrypt, and decryptions never go to the server"
            ) from err

    def _deserialize_chunk(self, data: bytes) -> ts.CKKSVector:
        return ts.ckks_vector_from(self.context, data)

    def _serialize_chunk(self, chunk: ts.CKKSVector) -> bytes:
        return chunk.serialize()

    def _check_chunk(self, chunk: ts.CKKSVector, n_values: int) -> str | None:
        if chunk.size() != n_values:
            return f"holds {chunk.size()} values, expected {n_values}"
        (ct,) = chunk.ciphertext()
        # A fresh upload sits at the top level with the run's scale and two polynomials; anything
        # else (rescaled, multiplied, mod-switched) cannot be added to the others.
        if ct.scale != self._scale:
            return f"has scale {ct.scale:g}, expected {self._scale:g}"
        if ct.parms_id() != self._fresh_parms_id:
            return "is not at the fresh-encryption modulus level"
        if ct.size() != 2:
            return f"has {ct.size()} polynomials, expected 2 (a fresh ciphertext)"
        return None

    def _add_into(self, acc: ts.CKKSVector, other: ts.CKKSVector) -> ts.CKKSVector:
        acc += other
        return acc

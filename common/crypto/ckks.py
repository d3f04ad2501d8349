"""CKKS for an add-only protocol: contexts, key files and the CKKS backend (TenSEAL's SEAL API).

Values arrive as fixed-point integers (:class:`common.crypto.backend.Backend` rounds them) and
are packed two per complex slot, so a ciphertext of ring dimension N carries N values. Clients
hold the secret key, so their uploads are encrypted *symmetrically* and serialised with SEAL's
seed in place of the second polynomial: half the bytes of a public-key ciphertext. The server
adds ciphertexts at the single data level with the public context only; a client decrypts a
sum and rounds it to the exact integer sum (the noise stays far below 1/2, see
:meth:`common.crypto.params.HEConfig.check_run`).

TenSEAL is imported here (and in ``keygen``) only. Its context files hold the keys; its SEAL API
(``tenseal.sealapi``) does the encoding, the seeded encryption and the additions, which the
high-level ``CKKSVector`` cannot (it neither packs two reals per slot nor keeps the seed).
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import tenseal as ts
import tenseal.sealapi as seal

from common.crypto.backend import Backend, params_hash
from common.crypto.params import HEConfig
from common.crypto.payload import CryptoError

SEAL_HEADER = struct.Struct("<HBBBBHQ")
"""SEAL's serialisation header: magic, header size, version (2), compression, reserved, and the
size of the whole serialised object in bytes."""
SEAL_MAGIC = 0xA15E

SEEDED, PUBLIC = "seeded", "public"
"""Encryption tags of a ciphertext: a client's symmetric upload (serialised with its seed) and
a public-key encryption (the server's round-1 state); sums are tagged ``sum``."""


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


class _Scratch:
    """SEAL's Python API saves and loads through file paths: one private scratch directory
    (in memory under /dev/shm when it exists) per backend."""

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        self.dir = tempfile.mkdtemp(prefix="keco-ckks-", dir=shm if shm.is_dir() else None)

    def path(self) -> str:
        fd, path = tempfile.mkstemp(dir=self.dir)
        os.close(fd)
        return path

    def save(self, obj) -> bytes:
        path = self.path()
        try:
            obj.save(path)
            return Path(path).read_bytes()
        finally:
            os.unlink(path)

    def load(self, context: seal.SEALContext, data: bytes) -> seal.Ciphertext:
        path = self.path()
        try:
            Path(path).write_bytes(data)
            ct = seal.Ciphertext()
            ct.load(context, path)  # SEAL checks the header and that the data fit the context
            return ct
        finally:
            os.unlink(path)


class CKKSBackend(Backend):
    """Fixed-point integers, two per complex slot; seeded symmetric uploads; add-only sums."""

    scheme = "ckks"
    packing = "complex"  # two reals per complex slot

    def __init__(self, context: ts.Context, cfg: HEConfig) -> None:
        cfg.validate()
        sctx = context.seal_context().data
        degree = sctx.key_context_data().parms().poly_modulus_degree()
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
        super().__init__(cfg, params_hash(cfg), key_id(context))
        self.context = context
        self._seal = sctx
        self._scale = 2.0**cfg.global_scale_bits
        self._data_level = sctx.first_parms_id()
        self._data_primes = len(cfg.coeff_mod_bit_sizes) - 1
        self._encoder = seal.CKKSEncoder(sctx)
        self._evaluator = seal.Evaluator(sctx)
        self._scratch = _Scratch()
        self._private = bool(context.is_private())
        if self._private:
            secret = context.secret_key().data
            self._encryptor = seal.Encryptor(sctx, secret)  # symmetric: seeded uploads
            self._decryptor = seal.Decryptor(sctx, secret)
        else:
            self._encryptor = seal.Encryptor(sctx, context.public_key().data)

    @classmethod
    def from_file(cls, path: str | Path, cfg: HEConfig) -> CKKSBackend:
        """Load ``secret.ctx`` (clients) or ``public.ctx`` (server)."""
        return cls(load_context(path), cfg)

    @property
    def can_decrypt(self) -> bool:
        return self._private

    @property
    def encryption(self) -> str:
        return SEEDED if self._private else PUBLIC

    @property
    def upload_encryption(self) -> str:
        return SEEDED  # clients hold the secret key

    @property
    def max_chunk_bytes(self) -> int:
        # two polynomials of N coefficients per data prime, 8 bytes each, plus SEAL's header
        return 2 * self.slots * 8 * self._data_primes + 1024

    def _encrypt_chunk(self, values: np.ndarray) -> bytes:
        padded = np.zeros(self.slots, dtype=np.float64)
        padded[: values.size] = values
        plain = seal.Plaintext()
        self._encoder.encode((padded[0::2] + 1j * padded[1::2]).tolist(), self._scale, plain)
        if self._private:  # Serializable<Ciphertext>: saved with the seed of its random part
            return self._scratch.save(self._encryptor.encrypt_symmetric(plain))
        ct = seal.Ciphertext()
        self._encryptor.encrypt(plain, ct)
        return self._scratch.save(ct)

    def _decrypt_chunk(self, chunk: seal.Ciphertext, n_values: int) -> np.ndarray:
        if not self._private:
            raise CryptoError(
                "this HE context holds no secret key (it is the server's public.ctx); only "
                "clients with secret.ctx decrypt, and decryptions never go to the server"
            )
        plain = seal.Plaintext()
        self._decryptor.decrypt(chunk, plain)
        slots = np.asarray(self._encoder.decode_complex(plain), dtype=np.complex128)
        values = np.empty(self.slots, dtype=np.float64)
        values[0::2], values[1::2] = slots.real, slots.imag
        return values[:n_values]

    def _deserialize_chunk(self, data: bytes) -> seal.Ciphertext:
        if len(data) < SEAL_HEADER.size:
            raise ValueError(f"{len(data)} bytes cannot hold SEAL's {SEAL_HEADER.size}-byte header")
        magic, header_size, _, _, _, _, size = SEAL_HEADER.unpack_from(data)
        if magic != SEAL_MAGIC or header_size != SEAL_HEADER.size:
            raise ValueError("no SEAL header")
        if size != len(data):  # exactly one serialised object: nothing missing, nothing appended
            raise ValueError(f"the SEAL header declares {size} bytes, the chunk has {len(data)}")
        return self._scratch.load(self._seal, data)

    def _serialize_chunk(self, chunk: seal.Ciphertext) -> bytes:
        return self._scratch.save(chunk)

    def _check_chunk(self, chunk: seal.Ciphertext, n_values: int) -> str | None:
        # Every upload sits at the data level with the run's scale and two polynomials in NTT
        # form; anything else (another level, multiplied, another scale) cannot be added.
        if chunk.parms_id() != self._data_level:
            return "is not at the run's data level (another modulus chain or level)"
        if chunk.scale != self._scale:
            return f"has scale {chunk.scale:g}, expected {self._scale:g}"
        if chunk.size() != 2:
            return f"has {chunk.size()} polynomials, expected 2"
        if not chunk.is_ntt_form():
            return "is not in NTT form"
        return None

    def _add(self, acc: seal.Ciphertext, other: seal.Ciphertext) -> seal.Ciphertext:
        out = seal.Ciphertext()
        self._evaluator.add(acc, other, out)
        return out

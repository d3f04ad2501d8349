"""The backend interface shared by strategy and clients, its add-only sum, the plaintext backend.

A backend turns a flat float vector into an :class:`EncryptedVector` and back, and checks and
adds received payloads. Values travel as fixed-point integers (multiples of
``2^-he.fraction_bits``), so sums are exact: ``CKKSBackend`` (``ckks.py``) encrypts them and
recovers the exact integer sum by rounding; ``PlainBackend`` adds the same integers in int64.
Turning HE off keeps one code path and the same numbers.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.crypto.packing import as_flat, chunk_count, chunk_sizes, join_chunks, split_chunks
from common.crypto.params import HEConfig
from common.crypto.payload import CryptoError, EncryptedVector, PayloadError, digest

SECRET_CONTEXT_FILE = "secret.ctx"
"""Key file with the secret key: clients only, never the server."""
PUBLIC_CONTEXT_FILE = "public.ctx"
"""Key file with the public key only (no secret key, no Galois keys): the server."""


def params_hash(cfg: HEConfig) -> str:
    """Short stable hash of the parameters that must agree for ciphertexts to be added."""
    if cfg.enabled:
        fields = {
            "scheme": cfg.scheme,
            "poly_modulus_degree": cfg.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(cfg.coeff_mod_bit_sizes),
            "global_scale_bits": cfg.global_scale_bits,
            "fraction_bits": cfg.fraction_bits,
        }
    else:
        fields = {"scheme": "plain", "slots": cfg.slots, "fraction_bits": cfg.fraction_bits}
    blob = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class LoadedVector:
    """A validated, deserialised payload: backend-native chunks ready to be added."""

    length: int
    chunks: list[Any]
    encryption: str
    """How the chunks were encrypted (:attr:`EncryptedVector.encryption`)."""


class Backend(ABC):
    """Encrypt/encode, decrypt/decode, validate and add flat vectors in N/2-value chunks."""

    scheme: str
    packing: str
    """How values are laid out in a chunk (recorded in every payload)."""

    def __init__(self, cfg: HEConfig, params_hash: str, key_id: str) -> None:
        self.slots = cfg.slots
        self.params_hash = params_hash
        self.key_id = key_id
        self.fraction_bits = cfg.fraction_bits
        self.quantum = 2.0**-cfg.fraction_bits
        """Fixed-point step of the encrypted values."""
        self.value_bound = cfg.value_bound

    # ---- what a subclass provides -------------------------------------------------------
    @property
    @abstractmethod
    def can_decrypt(self) -> bool:
        """Whether this party holds what decryption needs (the secret key for CKKS)."""

    @property
    @abstractmethod
    def encryption(self) -> str:
        """The tag of what :meth:`encrypt` produces (e.g. ``seeded`` uploads)."""

    @property
    @abstractmethod
    def upload_encryption(self) -> str:
        """The tag of a client's upload (what the server accepts to add)."""

    @property
    @abstractmethod
    def max_chunk_bytes(self) -> int:
        """The largest a well-formed serialised chunk can be (larger ones are refused before
        anything parses them)."""

    @abstractmethod
    def _encrypt_chunk(self, values: np.ndarray) -> bytes:
        """Serialised encryption of at most ``slots`` integer-valued float64 values."""

    @abstractmethod
    def _decrypt_chunk(self, chunk: Any, n_values: int) -> np.ndarray:
        """The first ``n_values`` decrypted values (integers up to noise)."""

    @abstractmethod
    def _deserialize_chunk(self, data: bytes) -> Any: ...

    @abstractmethod
    def _serialize_chunk(self, chunk: Any) -> bytes: ...

    @abstractmethod
    def _check_chunk(self, chunk: Any, n_values: int) -> str | None:
        """Return why a deserialised chunk is unusable, or ``None`` when it is fine."""

    @abstractmethod
    def _add(self, acc: Any, other: Any) -> Any:
        """A new ``acc + other`` (the only operation on ciphertexts); ``acc`` is left as it is,
        so that a sum can add a payload in full or not at all."""

    # ---- shared logic -------------------------------------------------------------------
    def encrypt(self, values: np.ndarray, bound: float | None = None) -> EncryptedVector:
        """Encrypt (or encode) a flat vector, rounded to the fixed-point grid, into
        ``ceil(len / slots)`` serialised chunks. ``bound``: the largest |value| allowed (the
        run's ``value_bound`` times the weight n_i the values carry); larger ones are refused
        so that no sum can wrap around the modulus."""
        flat = as_flat(values)
        peak = float(np.max(np.abs(flat)))
        if bound is not None and peak > bound:
            raise CryptoError(
                f"a value of magnitude {peak:.4g} exceeds {bound:.4g} (he.value_bound = "
                f"{self.value_bound:g} times the upload's weight): the sums could wrap around; "
                f"raise he.value_bound if such values are expected"
            )
        integers = np.rint(flat / self.quantum)
        chunks = tuple(self._encrypt_chunk(c) for c in split_chunks(integers, self.slots))
        return EncryptedVector.build(
            self.scheme, self.params_hash, self.key_id, flat.size, chunks,
            self.packing, self.encryption,
        )  # fmt: skip

    def decrypt(self, payload: EncryptedVector) -> np.ndarray:
        """Decrypt (or decode) a payload of this run into a float64 vector of its length: the
        exact integer sums (decryption noise rounded away) times the fixed-point step."""
        loaded = self.load(payload, payload.length)
        sizes = chunk_sizes(payload.length, self.slots)
        parts = [self._decrypt_chunk(c, n) for c, n in zip(loaded.chunks, sizes, strict=True)]
        return np.rint(join_chunks(parts, payload.length)) * self.quantum

    def load(self, payload: EncryptedVector, length: int) -> LoadedVector:
        """Validate a received payload against this run and ``length``; deserialise its chunks.

        Raises :class:`PayloadError` with the reason when metadata, parameter hash, key,
        length or chunk count disagree, or a chunk does not deserialise or is malformed.
        """
        if payload.scheme != self.scheme:
            raise PayloadError(
                f"scheme {payload.scheme!r} does not match the run's {self.scheme!r}"
            )
        if payload.packing != self.packing:
            raise PayloadError(
                f"packing {payload.packing!r} does not match the run's {self.packing!r}"
            )
        if payload.params_hash != self.params_hash:
            raise PayloadError(
                f"HE parameter hash {payload.params_hash} does not match the run's "
                f"{self.params_hash} (built from different conf/he settings)"
            )
        if payload.key_id != self.key_id:
            raise PayloadError(
                f"encrypted under another key (key id {payload.key_id}, the run's is "
                f"{self.key_id}); provision the client with this run's secret.ctx"
            )
        if payload.length != length:
            raise PayloadError(f"length {payload.length} does not match the expected {length}")
        expected_chunks = chunk_count(length, self.slots)
        if len(payload.chunks) != expected_chunks:
            raise PayloadError(
                f"{len(payload.chunks)} chunks where length {length} needs {expected_chunks}"
            )
        chunks = []
        sizes = chunk_sizes(length, self.slots)
        for k, (data, declared, n_values) in enumerate(
            zip(payload.chunks, payload.digests, sizes, strict=True)
        ):
            if digest(data) != declared:
                raise PayloadError(f"chunk {k} is corrupted (checksum mismatch)")
            try:
                chunk = self._deserialize_chunk(data)
            except Exception as err:  # noqa: BLE001 - any decoder failure means a bad upload
                raise PayloadError(
                    f"chunk {k} does not deserialise under the run's context "
                    f"({type(err).__name__}: {err})"
                ) from err
            reason = self._check_chunk(chunk, n_values)
            if reason is not None:
                raise PayloadError(f"chunk {k} {reason}")
            chunks.append(chunk)
        return LoadedVector(length, chunks, payload.encryption)

    def dump(self, loaded: LoadedVector) -> EncryptedVector:
        """Serialise a loaded (e.g. summed) vector back to a payload."""
        chunks = tuple(self._serialize_chunk(c) for c in loaded.chunks)
        return EncryptedVector.build(
            self.scheme, self.params_hash, self.key_id, loaded.length, chunks, self.packing,
            loaded.encryption,
        )  # fmt: skip

    def new_sum(self, length: int) -> EncryptedSum:
        """An empty add-only sum of payloads of ``length`` values."""
        return EncryptedSum(self, length)


class EncryptedSum:
    """Add-only running sum of loaded payloads; the server's only ciphertext operation.

    Every payload of one sum must have been encrypted the same way (the first one's tag): a
    mix is refused, so a sum never combines, say, seeded uploads with something else."""

    def __init__(self, backend: Backend, length: int) -> None:
        self.backend = backend
        self.length = length
        self.count = 0
        self._acc: list[Any] | None = None
        self._encryption: str | None = None

    def add(self, loaded: LoadedVector) -> None:
        """Add a validated payload, all of it or (on any error) none of it."""
        if loaded.length != self.length:
            raise ValueError(f"cannot add length {loaded.length} to a sum of length {self.length}")
        if self._encryption is not None and loaded.encryption != self._encryption:
            raise PayloadError(
                f"encrypted {loaded.encryption!r} where this sum holds {self._encryption!r} "
                f"uploads; a sum does not mix encryptions"
            )
        if self._acc is None:
            self._acc = list(loaded.chunks)
        else:  # every chunk's new sum first: a failure leaves the sum as it was
            self._acc = [
                self.backend._add(a, c) for a, c in zip(self._acc, loaded.chunks, strict=True)
            ]
        self._encryption = loaded.encryption
        self.count += 1

    def result(self) -> EncryptedVector | None:
        """The serialised sum (tagged ``sum``), or ``None`` when nothing was added."""
        if self._acc is None:
            return None
        return self.backend.dump(LoadedVector(self.length, self._acc, SUM_ENCRYPTION))


PLAIN_LIMIT = 2**52
"""Largest fixed-point integer a plaintext upload may hold: float64 represents every integer
below it exactly, as the CKKS decoding does; anything larger is a malformed upload."""
SUM_ENCRYPTION = "sum"
"""Tag of a payload that is a sum of uploads (what the server sends)."""


class PlainBackend(Backend):
    """Plaintext int64 chunks of the same fixed-point integers (``he=off``): exact sums."""

    scheme = "plain"
    packing = "int64"

    def __init__(self, cfg: HEConfig) -> None:
        super().__init__(cfg, params_hash(cfg), key_id="none")

    @property
    def can_decrypt(self) -> bool:
        return True

    @property
    def encryption(self) -> str:
        return "none"

    @property
    def upload_encryption(self) -> str:
        return "none"

    @property
    def max_chunk_bytes(self) -> int:
        return 8 * self.slots

    def _encrypt_chunk(self, values: np.ndarray) -> bytes:
        return np.ascontiguousarray(values, dtype="<i8").tobytes()

    def _decrypt_chunk(self, chunk: np.ndarray, n_values: int) -> np.ndarray:
        return chunk.astype(np.float64)

    def _deserialize_chunk(self, data: bytes) -> np.ndarray:
        if len(data) % 8:
            raise ValueError(f"{len(data)} bytes is not a whole number of int64 values")
        # A copy: frombuffer views are read-only and the sum adds in place.
        return np.frombuffer(data, dtype="<i8").copy()

    def _serialize_chunk(self, chunk: np.ndarray) -> bytes:
        return np.ascontiguousarray(chunk, dtype="<i8").tobytes()

    def _check_chunk(self, chunk: np.ndarray, n_values: int) -> str | None:
        if chunk.size != n_values:
            return f"holds {chunk.size} values, expected {n_values}"
        if chunk.size and np.abs(chunk).max() >= PLAIN_LIMIT:
            return "holds integers of magnitude 2^52 or more (a sum could overflow)"
        return None

    def _add(self, acc: np.ndarray, other: np.ndarray) -> np.ndarray:
        return acc + other

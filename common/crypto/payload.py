"""The wire form of an encrypted (or plaintext-encoded) vector: metadata plus chunk bytes."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class CryptoError(RuntimeError):
    """A local crypto operation cannot run (missing key, bad key file, value out of range)."""


class PayloadError(ValueError):
    """A received payload is unusable; the message is the reason, written for the log."""


FIELDS = (
    "scheme", "params-hash", "key-id", "length", "n-chunks", "chunks", "digests", "packing",
    "encryption",
)  # fmt: skip
"""Keys of a payload record (:meth:`EncryptedVector.to_dict`)."""


@dataclass(frozen=True)
class EncryptedVector:
    """A flat float vector split into chunks of at most N/2 values, each serialised to bytes.

    The metadata lets a receiver reject a payload before touching the bytes: ``scheme`` and
    ``params_hash`` must match the run's HE parameters, ``key_id`` the run's public key, and
    ``length`` / the number of chunks what the receiver expects. ``digests`` catch corrupted
    bytes: CKKS has no integrity of its own, and a ciphertext with damaged coefficients often
    still deserialises and decrypts to garbage. (They detect accidents, not forgery: anyone can
    recompute them.)
    """

    scheme: str
    """``ckks`` or ``plain``."""
    params_hash: str
    """Hash of the HE parameters (scheme, N, coefficient moduli, scale)."""
    key_id: str
    """Hash of the public key the chunks were encrypted under (``none`` for ``plain``)."""
    length: int
    """Number of plaintext values (the last chunk may be partly filled)."""
    chunks: tuple[bytes, ...]
    digests: tuple[str, ...]
    """CRC-32 of each chunk, hex."""
    packing: str
    """How values sit in a chunk: ``complex`` (CKKS, two reals per complex slot) or ``int64``."""
    encryption: str
    """``seeded`` (a client's symmetric upload), ``public`` (public-key), ``sum`` (a sum of
    uploads) or ``none`` (plaintext)."""

    @classmethod
    def build(
        cls,
        scheme: str,
        params_hash: str,
        key_id: str,
        length: int,
        chunks: Sequence[bytes],
        packing: str,
        encryption: str,
    ) -> EncryptedVector:
        """A payload with the digests of ``chunks`` computed."""
        chunks = tuple(chunks)
        return cls(
            scheme, params_hash, key_id, length, chunks, tuple(map(digest, chunks)), packing,
            encryption,
        )  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Bytes of chunk data, the part that scales with the model (metadata excluded)."""
        return sum(len(c) for c in self.chunks)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of Flower ConfigRecord-compatible values (str, int, list[bytes])."""
        return {
            "scheme": self.scheme,
            "params-hash": self.params_hash,
            "key-id": self.key_id,
            "length": self.length,
            "n-chunks": len(self.chunks),
            "chunks": list(self.chunks),
            "digests": list(self.digests),
            "packing": self.packing,
            "encryption": self.encryption,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EncryptedVector:
        """Inverse of :meth:`to_dict`; raises :class:`PayloadError` on a malformed record."""
        missing = [k for k in FIELDS if k not in raw]
        if missing:
            raise PayloadError(f"payload record lacks field(s) {missing}")
        chunks = raw["chunks"]
        if isinstance(chunks, bytes):  # a one-element list may arrive as a scalar
            chunks = [chunks]
        if not isinstance(chunks, (list, tuple)) or not all(isinstance(c, bytes) for c in chunks):
            raise PayloadError("payload field 'chunks' must be a list of bytes")
        length, n_chunks = raw["length"], raw["n-chunks"]
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise PayloadError(f"payload field 'length' must be a positive integer, got {length!r}")
        if not isinstance(n_chunks, int) or isinstance(n_chunks, bool) or n_chunks != len(chunks):
            raise PayloadError(
                f"payload declares {n_chunks!r} chunks but carries {len(chunks)} "
                f"(truncated or padded upload)"
            )
        digests = raw["digests"]
        if isinstance(digests, str):
            digests = [digests]
        if not isinstance(digests, (list, tuple)) or len(digests) != len(chunks):
            raise PayloadError(f"payload carries {len(chunks)} chunks but digests {digests!r}")
        for k in ("scheme", "params-hash", "key-id", "packing", "encryption"):
            if not isinstance(raw[k], str):
                raise PayloadError(f"payload field {k!r} must be a string, got {raw[k]!r}")
        return cls(
            scheme=raw["scheme"],
            params_hash=raw["params-hash"],
            key_id=raw["key-id"],
            length=length,
            chunks=tuple(chunks),
            digests=tuple(digests),
            packing=raw["packing"],
            encryption=raw["encryption"],
        )


def digest(chunk: bytes) -> str:
    """Checksum of one chunk: CRC-32, hex.

    CRC-32 catches transmission and storage accidents at a third of the cost of deserialising
    the chunk; a cryptographic hash would cost more and still prove nothing, since the sender
    computes it.
    """
    return f"{zlib.crc32(chunk):08x}"

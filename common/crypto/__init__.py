"""CKKS contexts, key files, packing and add-only encrypted sums (the only TenSEAL user).

TenSEAL itself is imported by ``ckks`` and ``keygen`` only, lazily through
:func:`make_backend`, so that ``he=off`` runs do not need it.
"""

from common.crypto.backend import (
    PUBLIC_CONTEXT_FILE,
    SECRET_CONTEXT_FILE,
    Backend,
    EncryptedSum,
    LoadedVector,
    PlainBackend,
    params_hash,
)
from common.crypto.factory import holds_secret_key, make_backend
from common.crypto.packing import (
    chunk_count,
    join_chunks,
    pack_model_and_labels,
    split_chunks,
    unpack_model_and_labels,
)
from common.crypto.payload import CryptoError, EncryptedVector, PayloadError

__all__ = [
    "Backend",
    "CryptoError",
    "EncryptedSum",
    "EncryptedVector",
    "LoadedVector",
    "PUBLIC_CONTEXT_FILE",
    "PayloadError",
    "PlainBackend",
    "SECRET_CONTEXT_FILE",
    "chunk_count",
    "holds_secret_key",
    "join_chunks",
    "make_backend",
    "pack_model_and_labels",
    "params_hash",
    "split_chunks",
    "unpack_model_and_labels",
]

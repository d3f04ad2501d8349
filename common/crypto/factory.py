"""Which backend a run uses: plaintext for ``he=off``, CKKS from a context file otherwise.

Kept apart from :mod:`common.crypto.backend` so that the CKKS backend (which builds on the
backend interface) is imported from here alone, lazily: ``he=off`` runs never load TenSEAL.
"""

from __future__ import annotations

from pathlib import Path

from common.crypto.backend import Backend, PlainBackend
from common.crypto.params import HEConfig
from common.crypto.payload import CryptoError


def make_backend(cfg: HEConfig, context_path: str | Path | None = None) -> Backend:
    """The backend for a run: plaintext for ``he=off``, else CKKS from a context file.

    Servers pass ``public.ctx`` (they can add and encrypt but not decrypt); clients pass
    ``secret.ctx``.
    """
    if not cfg.enabled:
        return PlainBackend(cfg)
    if context_path is None:
        raise CryptoError(
            f"he.scheme={cfg.scheme!r} needs a context file: public.ctx for the server, "
            f"secret.ctx for clients (create them with `python -m common.crypto.keygen`)"
        )
    from common.crypto.ckks import CKKSBackend  # TenSEAL is only needed when HE is on

    return CKKSBackend.from_file(context_path, cfg)


def holds_secret_key(context_path: str | Path) -> bool:
    """Whether the serialised CKKS context at ``context_path`` carries a secret key."""
    from common.crypto.ckks import load_context

    return load_context(context_path).has_secret_key()

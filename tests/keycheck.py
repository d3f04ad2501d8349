"""What every run test checks of the server's side: it holds no CKKS secret key."""

from __future__ import annotations

from pathlib import Path

from common.crypto import SECRET_CONTEXT_FILE, holds_secret_key


def assert_no_secret_key(server_dir: Path, secret_file: Path | None = None) -> int:
    """Walk ``server_dir``: no ``secret.ctx``, no copy of ``secret_file`` under another name,
    and every ``*.ctx`` a public context (TenSEAL's header says whether a secret key is in).
    Returns the number of files walked."""
    secret = secret_file.read_bytes() if secret_file is not None else None
    walked = 0
    for path in Path(server_dir).rglob("*"):
        if not path.is_file():
            continue
        walked += 1
        assert path.name != SECRET_CONTEXT_FILE, f"the server's side holds {path}"
        if secret is not None and path.stat().st_size == len(secret):
            assert path.read_bytes() != secret, f"{path} is a copy of the secret context"
        if path.suffix == ".ctx":
            assert not holds_secret_key(path), f"{path} holds a secret key"
    return walked

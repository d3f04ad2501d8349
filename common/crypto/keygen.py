"""Key generation: ``python -m common.crypto.keygen --he ckks --out <dir>``.

Writes ``secret.ctx`` (public + secret key; clients only), ``public.ctx`` (public key only,
no secret key, no Galois keys; the server) and ``keys.json`` (parameter hash and key id, for
humans and for checking that every party loaded the same keys).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common.crypto.backend import PUBLIC_CONTEXT_FILE, SECRET_CONTEXT_FILE, params_hash
from common.crypto.ckks import build_context, key_id, public_copy, serialize_context
from common.crypto.params import HEConfig, load_he
from common.crypto.payload import CryptoError

MANIFEST_FILE = "keys.json"


def generate_keys(cfg: HEConfig, out_dir: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Create a key pair for ``cfg`` in ``out_dir``; return ``(secret_path, public_path)``."""
    out = Path(out_dir)
    secret_path, public_path = out / SECRET_CONTEXT_FILE, out / PUBLIC_CONTEXT_FILE
    if not overwrite and (secret_path.exists() or public_path.exists()):
        raise CryptoError(
            f"{out} already holds keys; clients encrypting under the old key would be rejected. "
            f"Pass overwrite=True (--force) to replace them"
        )
    out.mkdir(parents=True, exist_ok=True)
    ctx = build_context(cfg)
    public = public_copy(ctx)
    if public.is_private() or public.has_galois_keys():
        raise CryptoError("internal error: the public context still holds secret or Galois keys")
    # The secret file is readable by its owner only; it must never reach the server.
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(serialize_context(ctx, secret=True))
    public_path.write_bytes(serialize_context(public, secret=False))
    manifest = {
        "he": cfg.name,
        "scheme": cfg.scheme,
        "poly_modulus_degree": cfg.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(cfg.coeff_mod_bit_sizes),
        "global_scale_bits": cfg.global_scale_bits,
        "params_hash": params_hash(cfg),
        "key_id": key_id(ctx),
        "secret": SECRET_CONTEXT_FILE,
        "public": PUBLIC_CONTEXT_FILE,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return secret_path, public_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.crypto.keygen", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--he", default="ckks", help="conf/he preset (ckks, ckks4096)")
    parser.add_argument("--out", required=True, help="directory for secret.ctx and public.ctx")
    parser.add_argument("--force", action="store_true", help="replace existing keys")
    args = parser.parse_args(argv)
    cfg = load_he(args.he)
    try:
        secret_path, public_path = generate_keys(cfg, args.out, overwrite=args.force)
    except CryptoError as err:
        print(f"keygen: {err}", file=sys.stderr)
        return 1
    print(f"secret context (clients only): {secret_path} ({secret_path.stat().st_size} bytes)")
    print(f"public context (server):       {public_path} ({public_path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared fixtures: CKKS key pairs generated once per test session (~0.1–0.3 s each), and the
settings' schemas registered for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.crypto.keygen import generate_keys
from common.crypto.params import HEConfig, load_he
from common.fed.settings import register_schemas

# As every entry point does before it composes conf/; here before any test module is collected
# (some compose at import) and for the tests that call Hydra's own compose.
register_schemas()


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory):
    """``keys(preset, tag="a") -> (cfg, secret_path, public_path)``, cached per (preset, tag)."""
    cache: dict[tuple[str, str], tuple[HEConfig, Path, Path]] = {}

    def make(preset: str = "ckks4096", tag: str = "a") -> tuple[HEConfig, Path, Path]:
        if (preset, tag) not in cache:
            cfg = load_he(preset)
            secret, public = generate_keys(cfg, tmp_path_factory.mktemp(f"keys-{preset}-{tag}"))
            cache[preset, tag] = (cfg, secret, public)
        return cache[preset, tag]

    return make

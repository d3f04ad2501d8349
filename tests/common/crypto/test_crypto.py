import stat

import numpy as np
import pytest
import tenseal as ts

from common.config import ConfigError, he_from_dict, load_he
from common.crypto import (
    CryptoError,
    EncryptedVector,
    PayloadError,
    PlainBackend,
    make_backend,
    split_chunks,
)
from common.crypto.ckks import SUM_HEADROOM_BITS, CKKSBackend, load_context
from common.crypto.keygen import main as keygen_main
from common.crypto.packing import chunk_count, join_chunks, unpack_model_and_labels


def test_he_presets_load_with_documented_parameters():
    default = load_he("ckks")
    assert (default.poly_modulus_degree, default.coeff_mod_bit_sizes) == (8192, (60, 40, 40))
    assert default.global_scale_bits == 40 and default.slots == 4096
    small = load_he("ckks4096")
    assert small.slots == 2048 and sum(small.coeff_mod_bit_sizes) <= 109
    off = load_he("off")
    assert off.scheme == "off" and not off.enabled


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"scheme": "bfv"}, "he.scheme"),
        ({"poly_modulus_degree": 5000}, "he.poly_modulus_degree"),
        ({"coeff_mod_bit_sizes": [60, 60, 60, 60]}, "128-bit"),
        ({"coeff_mod_bit_sizes": [40, 40, 40], "global_scale_bits": 40}, "must exceed"),
        ({"global_scale_bits": 70}, "he.global_scale_bits"),
        ({"slots": 4}, "unknown field"),
    ],
)
def test_he_config_errors_name_the_field(raw, field):
    with pytest.raises(ConfigError, match=field):
        he_from_dict(raw)


def test_public_context_has_no_secret_key_and_cannot_decrypt(keys):
    cfg, secret_path, public_path = keys("ckks")
    client = make_backend(cfg, secret_path)
    server = make_backend(cfg, public_path)
    assert client.can_decrypt and not server.can_decrypt
    assert client.key_id == server.key_id
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600

    public = load_context(public_path)
    assert not public.is_private() and not public.has_secret_key()
    assert not public.has_galois_keys()
    with pytest.raises(ValueError, match="(?i)secret key"):
        public.secret_key()

    payload = client.encrypt(np.arange(10.0))
    ciphertext = ts.ckks_vector_from(public, payload.chunks[0])
    with pytest.raises(ValueError, match="doesn't hold a secret_key"):
        ciphertext.decrypt()  # TenSEAL's own refusal
    with pytest.raises(CryptoError, match="no secret key") as info:
        server.decrypt(payload)
    assert isinstance(info.value.__cause__, ValueError)
    # The server can still encrypt (round 1) and the client can read that.
    np.testing.assert_allclose(client.decrypt(server.encrypt(np.ones(3))), np.ones(3), atol=1e-6)


def test_keygen_command_writes_both_files_and_refuses_to_overwrite(tmp_path, capsys):
    assert keygen_main(["--he", "ckks4096", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"secret.ctx", "public.ctx", "keys.json"}
    assert (tmp_path / "public.ctx").stat().st_size < (tmp_path / "secret.ctx").stat().st_size
    assert keygen_main(["--he", "ckks4096", "--out", str(tmp_path)]) == 1
    assert "already holds keys" in capsys.readouterr().err


@pytest.mark.parametrize(("preset", "tol"), [("ckks", 1e-7), ("ckks4096", 2e-6)])
def test_encrypt_decrypt_round_trip_over_several_chunks(keys, preset, tol):
    cfg, secret_path, _ = keys(preset)
    backend = make_backend(cfg, secret_path)
    values = np.random.default_rng(0).normal(scale=10.0, size=cfg.slots * 2 + 7)
    payload = backend.encrypt(values)
    assert len(payload.chunks) == 3 == chunk_count(values.size, cfg.slots)
    assert payload.length == values.size
    assert np.max(np.abs(backend.decrypt(payload) - values)) < tol


def test_default_ciphertext_size_fits_the_upload_budget(keys):
    cfg, secret_path, _ = keys("ckks")
    backend = make_backend(cfg, secret_path)
    # 6,500 parameters + a 33x33 soft-label table (KECO's 32 edge nodes) = two ciphertexts.
    payload = backend.encrypt(np.random.default_rng(1).normal(size=6500 + 33 * 33))
    assert len(payload.chunks) == 2
    assert payload.nbytes <= 500_000


def test_add_only_sum_matches_numpy(keys):
    cfg, secret_path, public_path = keys("ckks4096")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(20, 3000))
    total = server.new_sum(3000)
    for v in vectors:
        total.add(server.load(client.encrypt(v), 3000))
    assert total.count == 20
    np.testing.assert_allclose(client.decrypt(total.result()), vectors.sum(0), atol=1e-5)
    assert server.new_sum(5).result() is None


def test_encrypt_refuses_values_that_could_overflow_a_sum(keys):
    cfg, secret_path, _ = keys("ckks4096")
    backend = make_backend(cfg, secret_path)
    limit = 2.0 ** (60 - 35 - 1 - SUM_HEADROOM_BITS)
    assert backend.max_abs_value == limit
    backend.encrypt(np.array([limit * 0.99]))
    with pytest.raises(CryptoError, match="headroom"):
        backend.encrypt(np.array([limit * 1.01]))


def _replace(payload: EncryptedVector, **changes) -> EncryptedVector:
    return EncryptedVector(**{**payload.__dict__, **changes})


def test_load_rejects_bad_payloads_with_reasons(keys):
    cfg, secret_path, public_path = keys("ckks4096")
    _, other_secret, _ = keys("ckks4096", tag="other")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    stranger = make_backend(cfg, other_secret)
    good = client.encrypt(np.ones(100))
    corrupted = bytearray(good.chunks[0])
    corrupted[len(corrupted) // 2 : len(corrupted) // 2 + 64] = bytes(64)
    cases = {
        "another key": stranger.encrypt(np.ones(100)),
        "chunk 0 is corrupted": _replace(good, chunks=(bytes(corrupted),)),
        "does not deserialise": EncryptedVector.build(
            good.scheme, good.params_hash, good.key_id, 100, [bytes(corrupted[:1000])]
        ),
        "length 99": _replace(good, length=99),
        "2 chunks": _replace(good, chunks=good.chunks * 2),
        "parameter hash": _replace(good, params_hash="0" * 16),
        "scheme 'plain'": _replace(good, scheme="plain"),
    }
    for reason, payload in cases.items():
        with pytest.raises(PayloadError, match=reason):
            server.load(payload, 100)
    # The same ciphertext bytes under another key still deserialise (same parameters): only the
    # key id tells them apart, so it is checked before the bytes.
    forged = _replace(stranger.encrypt(np.ones(100)), key_id=server.key_id)
    assert server.load(forged, 100).length == 100


def test_load_rejects_a_ciphertext_with_the_wrong_slot_count(keys):
    cfg, secret_path, public_path = keys("ckks4096")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    short = client.encrypt(np.ones(50))
    with pytest.raises(PayloadError, match="holds 50 values, expected 100"):
        server.load(_replace(short, length=100), 100)
    with pytest.raises(PayloadError, match="chunk 0 is corrupted"):
        server.load(_replace(short, length=100, chunks=client.encrypt(np.ones(100)).chunks), 100)


def test_backend_refuses_a_context_from_other_parameters(keys):
    _, _, public_path = keys("ckks4096")
    with pytest.raises(CryptoError, match="poly_modulus_degree=4096"):
        CKKSBackend.from_file(public_path, load_he("ckks"))
    with pytest.raises(CryptoError, match="needs a context file"):
        make_backend(load_he("ckks"))
    with pytest.raises(CryptoError, match="does not exist"):
        make_backend(load_he("ckks"), public_path.parent / "missing.ctx")


def test_plain_backend_same_interface_and_nan_rejected():
    backend = PlainBackend(load_he("off"))
    values = np.linspace(-1, 1, 10_000)
    payload = backend.encrypt(values)
    assert payload.scheme == "plain" and len(payload.chunks) == 3
    np.testing.assert_array_equal(backend.decrypt(payload), values)
    poisoned = np.frombuffer(payload.chunks[1], dtype="<f8").copy()
    poisoned[7] = np.nan
    chunks = (payload.chunks[0], poisoned.tobytes(), payload.chunks[2])
    bad = EncryptedVector.build("plain", payload.params_hash, "none", values.size, chunks)
    with pytest.raises(PayloadError, match="chunk 1 has non-finite"):
        backend.load(bad, values.size)
    with pytest.raises(PayloadError, match="does not deserialise"):
        chunks = (b"abc",) + payload.chunks[1:]
        backend.load(
            EncryptedVector.build("plain", payload.params_hash, "none", 10_000, chunks), 10_000
        )
    with pytest.raises(ValueError, match="non-finite value at index 3"):
        backend.encrypt(np.array([0.0, 1.0, 2.0, np.inf]))


def test_payload_dict_round_trip_and_malformed_records():
    payload = EncryptedVector.build("plain", "abc", "none", 3, [b"x" * 24])
    assert EncryptedVector.from_dict(payload.to_dict()) == payload
    raw = payload.to_dict()
    with pytest.raises(PayloadError, match="declares 2 chunks but carries 1"):
        EncryptedVector.from_dict({**raw, "n-chunks": 2})
    with pytest.raises(PayloadError, match="lacks field"):
        EncryptedVector.from_dict({k: v for k, v in raw.items() if k != "key-id"})


def test_packing_splits_and_unpacks():
    values = np.arange(10.0)
    chunks = split_chunks(values, 4)
    assert [c.size for c in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(join_chunks(chunks, 10), values)
    model, table = unpack_model_and_labels(np.arange(13.0), 4, 3, 3)
    assert model.tolist() == [0, 1, 2, 3] and table.shape == (3, 3) and table[2, 2] == 12
    with pytest.raises(ValueError, match="need 14"):
        unpack_model_and_labels(np.arange(13.0), 5, 3, 3)
    # proxy knowledge: one row of logits per proxy state
    model, logits = unpack_model_and_labels(np.arange(12.0), 2, 2, 5)
    assert logits.shape == (5, 2) and logits[4, 1] == 11

import stat

import numpy as np
import pytest

from common.config import ConfigError, compose
from common.crypto import (
    CryptoError,
    EncryptedVector,
    PayloadError,
    PlainBackend,
    make_backend,
    split_chunks,
)
from common.crypto.ckks import CKKSBackend, load_context
from common.crypto.keygen import main as keygen_main
from common.crypto.packing import chunk_count, join_chunks, unpack_model_and_labels
from common.crypto.params import he_from_dict, load_he
from common.fed.settings import federated_from_dict


def test_he_presets_load_with_documented_parameters():
    default = load_he("ckks")
    assert (default.poly_modulus_degree, default.coeff_mod_bit_sizes) == (8192, (60, 40))
    assert default.global_scale_bits == 18 and default.fraction_bits == 12
    assert default.slots == 8192 and default.data_bits == 60  # two reals per complex slot
    small = load_he("ckks4096")
    assert small.slots == 4096 and sum(small.coeff_mod_bit_sizes) <= 109
    off = load_he("off")
    assert off.scheme == "off" and not off.enabled and off.fraction_bits == 12
    # the design point of both sets: 1,024 uploads, n_i up to 4,000, |v| up to 128
    for cfg in (default, small):
        cfg.check_run(1024, 4000)
        assert 0.5 / cfg.noise_std(1024) >= 20


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"scheme": "bfv"}, "he.scheme"),
        ({"poly_modulus_degree": 5000}, "he.poly_modulus_degree"),
        ({"coeff_mod_bit_sizes": [60, 60, 60, 60]}, "128-bit-security limit of 218"),
        ({"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": [60, 60]}, "limit of 109"),
        ({"coeff_mod_bit_sizes": [18, 40]}, "must exceed he.global_scale_bits"),
        ({"global_scale_bits": 70}, "he.global_scale_bits"),
        ({"fraction_bits": -1}, "he.fraction_bits"),
        ({"value_bound": 0}, "he.value_bound"),
        ({"slots": 4}, "unknown field"),
    ],
)
def test_he_config_errors_name_the_field(raw, field):
    with pytest.raises(ConfigError, match=field):
        he_from_dict(raw)


def test_too_tight_sets_are_refused_for_the_run_they_serve():
    cfg = load_he("ckks")
    # noise: 4,096 uploads leave 10 standard deviations below 1/2
    with pytest.raises(ConfigError, match="global_scale_bits=18 is too small .* at least 19"):
        cfg.check_run(4096, 100)
    # headroom: twice the buffer does not fit at 12 fraction bits; 11 would
    with pytest.raises(ConfigError, match="lower he.fraction_bits to 11"):
        cfg.check_run(1024, 8000)
    he_from_dict({"fraction_bits": 11}).check_run(1024, 8000)
    # the run's own config is checked before any work
    raw = compose(["experiment=federation", "strategy.local.buffer_size=10000000"])
    with pytest.raises(ConfigError, match="strategy.local.buffer_size"):
        federated_from_dict(raw)


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
    with pytest.raises(CryptoError, match="no secret key"):
        server.decrypt(payload)
    # The server can still encrypt (round 1, with the public key) and the client can read it.
    round_one = server.encrypt(np.ones(3) / 3)
    assert round_one.encryption == "public" and payload.encryption == "seeded"
    np.testing.assert_array_equal(client.decrypt(round_one), np.rint(2**12 / 3) / 2**12)


def test_keygen_command_writes_both_files_and_refuses_to_overwrite(tmp_path, capsys):
    assert keygen_main(["--he", "ckks4096", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"secret.ctx", "public.ctx", "keys.json"}
    assert (tmp_path / "public.ctx").stat().st_size < (tmp_path / "secret.ctx").stat().st_size
    assert keygen_main(["--he", "ckks4096", "--out", str(tmp_path)]) == 1
    assert "already holds keys" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["ckks", "ckks4096"])
def test_round_trip_is_the_fixed_point_value_exactly(keys, preset):
    cfg, secret_path, _ = keys(preset)
    backend = make_backend(cfg, secret_path)
    values = np.random.default_rng(0).normal(scale=10.0, size=cfg.slots * 2 + 7)
    payload = backend.encrypt(values)
    assert len(payload.chunks) == 3 == chunk_count(values.size, cfg.slots)
    assert payload.length == values.size and payload.packing == "complex"
    decrypted = backend.decrypt(payload)
    quantum = 2.0**-cfg.fraction_bits
    np.testing.assert_array_equal(decrypted, np.rint(values / quantum) * quantum)
    assert np.max(np.abs(decrypted - values)) <= quantum / 2


def test_uploads_cost_8_bytes_per_value_and_sums_16(keys):
    cfg, secret_path, public_path = keys("ckks")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    values = np.random.default_rng(1).normal(size=2 * cfg.slots)
    upload = client.encrypt(values)  # seeded symmetric: one polynomial and a seed
    assert upload.nbytes / values.size <= 8.1
    total = server.new_sum(values.size)
    for _ in range(3):
        total.add(server.load(client.encrypt(values), values.size))
    assert total.result().nbytes / values.size <= 16.1  # a sum: two polynomials


def test_add_only_sum_is_the_exact_integer_sum_and_the_plaintext_one(keys):
    """Sums of seeded uploads decrypt to the exact sum of the fixed-point integers: the same
    numbers as the plaintext backend, and the numpy reference within 1e-6."""
    cfg, secret_path, public_path = keys("ckks4096")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    plain = PlainBackend(load_he("off", poly_modulus_degree=4096))
    rng = np.random.default_rng(2)
    weights = rng.integers(1, 4000, size=64)
    vectors = rng.normal(scale=3.0, size=(64, 5000))
    total, plain_total = server.new_sum(5000), plain.new_sum(5000)
    for n, v in zip(weights, vectors, strict=True):
        total.add(server.load(client.encrypt(n * v, bound=n * 128.0), 5000))
        plain_total.add(plain.load(plain.encrypt(n * v), 5000))
    assert total.count == 64 and total.result().encryption == "sum"
    mean = client.decrypt(total.result()) / weights.sum()
    np.testing.assert_array_equal(mean, plain.decrypt(plain_total.result()) / weights.sum())
    want = (weights[:, None] * vectors).sum(0) / weights.sum()
    assert np.max(np.abs(mean - want)) <= 1e-6
    assert server.new_sum(5).result() is None


def test_encrypt_refuses_values_over_the_bound(keys):
    cfg, secret_path, _ = keys("ckks4096")
    backend = make_backend(cfg, secret_path)
    backend.encrypt(np.array([127.9 * 10]), bound=10 * 128.0)
    with pytest.raises(CryptoError, match="he.value_bound"):
        backend.encrypt(np.array([128.1 * 10]), bound=10 * 128.0)


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
            good.scheme, good.params_hash, good.key_id, 100, [bytes(corrupted[:1000])],
            good.packing, good.encryption,
        ),
        "length 99": _replace(good, length=99),
        "2 chunks": _replace(good, chunks=good.chunks * 2),
        "parameter hash": _replace(good, params_hash="0" * 16),
        "scheme 'plain'": _replace(good, scheme="plain"),
        "packing 'int64'": _replace(good, packing="int64"),
    }  # fmt: skip
    for reason, payload in cases.items():
        with pytest.raises(PayloadError, match=reason):
            server.load(payload, 100)
    # The same ciphertext bytes under another key still deserialise (same parameters): only the
    # key id tells them apart, so it is checked before the bytes.
    forged = _replace(stranger.encrypt(np.ones(100)), key_id=server.key_id)
    assert server.load(forged, 100).length == 100


def test_a_sum_never_mixes_encryptions(keys):
    cfg, secret_path, public_path = keys("ckks4096")
    client, server = make_backend(cfg, secret_path), make_backend(cfg, public_path)
    total = server.new_sum(10)
    total.add(server.load(client.encrypt(np.ones(10)), 10))
    with pytest.raises(PayloadError, match="does not mix encryptions"):
        total.add(server.load(server.encrypt(np.ones(10)), 10))  # a public-key ciphertext
    assert total.count == 1


def test_backend_refuses_a_context_from_other_parameters(keys):
    _, _, public_path = keys("ckks4096")
    with pytest.raises(CryptoError, match="poly_modulus_degree=4096"):
        CKKSBackend.from_file(public_path, load_he("ckks"))
    with pytest.raises(CryptoError, match="needs a context file"):
        make_backend(load_he("ckks"))
    with pytest.raises(CryptoError, match="does not exist"):
        make_backend(load_he("ckks"), public_path.parent / "missing.ctx")


def test_plain_backend_same_interface_exact_integer_sums():
    backend = PlainBackend(load_he("off"))
    values = np.linspace(-1, 1, 20_000)
    payload = backend.encrypt(values)
    assert payload.scheme == "plain" and len(payload.chunks) == 3 and payload.packing == "int64"
    quantum = 2.0**-12
    np.testing.assert_array_equal(backend.decrypt(payload), np.rint(values / quantum) * quantum)
    with pytest.raises(PayloadError, match="does not deserialise"):
        chunks = (b"abc",) + payload.chunks[1:]
        backend.load(
            EncryptedVector.build("plain", payload.params_hash, "none", 20_000, chunks,
                                  "int64", "none"), 20_000,
        )  # fmt: skip
    with pytest.raises(ValueError, match="non-finite value at index 3"):
        backend.encrypt(np.array([0.0, 1.0, 2.0, np.inf]))


def test_payload_dict_round_trip_and_malformed_records():
    payload = EncryptedVector.build("plain", "abc", "none", 3, [b"x" * 24], "int64", "none")
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

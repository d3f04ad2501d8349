"""``common.protocol``: the server/client message contract, tested from the server's side."""

import numpy as np
import pytest

from common.crypto import PayloadError, make_backend
from common.crypto.params import load_he
from common.protocol import (
    PAYLOAD,
    UPLOAD,
    GlobalSums,
    GlobalTerm,
    RoundSettings,
    TrainUpload,
    build_upload,
    expected_length,
    read_global,
)


@pytest.fixture()
def plain():
    return make_backend(load_he("off"))


def test_upload_records_round_trip_and_lengths(plain):
    upload = build_upload(plain, "x", 4, np.eye(3), np.arange(5.0), logits_round=2)
    back = TrainUpload.from_records(upload.to_records())
    assert back == upload
    assert back.payload.length == expected_length("x", 5, 3) == 14
    np.testing.assert_array_equal(plain.decrypt(back.payload)[:5], 4 * np.arange(5.0))
    late = build_upload(plain, "u", 2, np.eye(3))
    assert late.payload.length == expected_length("u", 5, 3) == 9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "y"}, "role must be one of"),
        ({"num_examples": 0}, "positive number"),
        ({"model": None}, "pass model=W"),
        ({"role": "v", "model": np.ones(5)}, "logits only"),
        ({"soft_labels": np.ones(3)}, "matrix"),
        ({"soft_labels": np.ones((4, 1))}, "M >= 1"),
        ({"model": np.array([1.0, np.nan])}, "non-finite"),
    ],
)
def test_build_upload_names_the_mistake(plain, kwargs, message):
    args = {"role": "x", "num_examples": 3, "soft_labels": np.eye(3), "model": np.ones(5)}
    with pytest.raises(ValueError, match=message):
        build_upload(plain, **{**args, **kwargs})


def test_upload_from_records_rejects_malformed_headers(plain):
    records = build_upload(plain, "x", 4, np.eye(3), np.arange(5.0)).to_records()
    with pytest.raises(PayloadError, match="lacks the 'keco.payload' record"):
        TrainUpload.from_records({UPLOAD: records[UPLOAD]})
    for value, message in [(float("nan"), "n_i=nan"), (True, "n_i=True"), ("3", "n_i='3'")]:
        bad = {**records, UPLOAD: {**records[UPLOAD], "num-examples": value}}
        with pytest.raises(PayloadError, match=message):
            TrainUpload.from_records(bad)
    with pytest.raises(PayloadError, match="role 'w'"):
        TrainUpload.from_records({**records, UPLOAD: {**records[UPLOAD], "role": "w"}})
    assert PAYLOAD in records


def test_global_sums_survive_records_and_arrays_with_correction(plain):
    x = GlobalTerm(plain.encrypt(np.concatenate([np.full(5, 6.0), np.full(9, 3.0)])), 3.0)
    u = GlobalTerm(plain.encrypt(np.full(9, 8.0)), 4.0)
    v = GlobalTerm(plain.encrypt(np.full(9, 1.0)), 2.0)
    sums = GlobalSums(x, u, v)
    assert GlobalSums.from_records(sums.to_records()) == sums
    assert GlobalSums.from_arrays(sums.to_arrays()) == sums
    assert GlobalSums.in_arrays(sums.to_arrays().keys())
    model, soft = read_global(plain, sums, 5, 3)
    np.testing.assert_array_equal(model, np.full(5, 2.0))
    np.testing.assert_array_equal(soft, np.full((3, 3), 1.0 + 2.0 - 0.5))  # x + u/Σu − v/Σv
    only_x = GlobalSums(x)
    assert set(only_x.to_records()) == {"keco.global.x"}
    np.testing.assert_array_equal(read_global(plain, only_x, 5, 3)[1], np.ones((3, 3)))
    # Δ is stale minus fresh logits: with one late set missing it is not applied
    for one_sided in (GlobalSums(x, u, None), GlobalSums(x, None, v)):
        np.testing.assert_array_equal(read_global(plain, one_sided, 5, 3)[1], np.ones((3, 3)))
    with pytest.raises(PayloadError, match="length 14, expected 15"):
        read_global(plain, sums, 6, 3)
    with pytest.raises(PayloadError, match="total 0"):
        GlobalTerm.from_record({**x.to_record(), "total": 0})


def test_round_settings_need_every_key():
    settings = RoundSettings(1, 10, 3, 64, True, 0.75, 2.0, 1.5, True)
    assert RoundSettings.from_config(settings.to_config()) == settings
    partial = {k: v for k, v in settings.to_config().items() if k != "keco.delta"}
    with pytest.raises(ValueError, match="keco.delta"):
        RoundSettings.from_config(partial)


def test_initial_weight_is_the_largest_power_of_two_within_the_largest_n():
    from common.protocol import initial_weight

    assert initial_weight(4000) == 2048.0 and initial_weight(4096) == 4096.0
    assert initial_weight(1) == 1.0 and initial_weight(0) == 1.0

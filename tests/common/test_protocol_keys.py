"""``common.protocol``'s names: one definition per record name, key and role code, no clashes,
and the wire values the committed runs were made with."""

import common.protocol as p
from common.crypto.payload import FIELDS as PAYLOAD_FIELDS


def _distinct(values) -> bool:
    values = list(values)
    return len(set(values)) == len(values)


def test_record_names_are_distinct():
    globals_ = [p.GLOBAL_PREFIX + role for role in p.ROLES]
    assert _distinct([*p.RECORD_NAMES, *globals_])
    assert not any(name.startswith(p.GLOBAL_PREFIX) for name in p.RECORD_NAMES)


def test_keys_within_each_record_are_distinct():
    assert _distinct(p.SETTINGS_KEYS.values())
    assert _distinct([p.ROLE_KEY, p.NUM_EXAMPLES_KEY, p.LOGITS_ROUND_KEY])  # upload header
    assert p.TOTAL_KEY not in PAYLOAD_FIELDS  # a global term is a payload plus its total
    assert _distinct([p.INIT_MODEL, p.INIT_SOFT_LABELS, p.STUDENT_KEY])
    assert not any(k.startswith(p.GLOBAL_PREFIX) for k in (p.INIT_MODEL, p.INIT_SOFT_LABELS))
    metric_keys = [
        p.NUM_EXAMPLES_KEY, p.EVAL_WEIGHT, p.LATE_KEY, p.COMPUTE_KEY, p.EDGE_GROUP_KEY,
        p.TRAIN_LOSS_KEY, p.TRAIN_ACCURACY_KEY, p.EPISODES_KEY, p.TRAIN_STEPS_KEY,
    ]  # fmt: skip
    assert _distinct(metric_keys)
    assert set(p.SUMMED_METRICS) <= set(metric_keys) and _distinct(p.EVAL_METRICS)
    assert _distinct(p.ROLES) and len(p.ROLES) == 3


def test_round_settings_send_exactly_their_keys():
    settings = p.RoundSettings(1, 10, 3, 3, False, 0.5, 2.0, 1.0, True)
    assert list(settings.to_config()) == list(p.SETTINGS_KEYS.values())
    assert p.RoundSettings.from_config(settings.to_config()) == settings


def test_wire_values_are_unchanged():
    """The values are the wire format (and the committed results read them): pinned."""
    assert (p.CONFIG, p.ARRAYS, p.GLOBAL_PREFIX, p.UPLOAD, p.PAYLOAD, p.METRICS) == (
        "config", "arrays", "keco.global.", "keco.upload", "keco.payload", "metrics",
    )  # fmt: skip
    assert list(p.SETTINGS_KEYS.values()) == [
        "server-round", "keco.model-length", "keco.num-classes", "keco.knowledge-rows",
        "keco.knowledge", "keco.delta", "keco.temperature", "keco.deadline-s", "keco.correction",
    ]  # fmt: skip
    assert (p.ROLE_KEY, p.NUM_EXAMPLES_KEY, p.LOGITS_ROUND_KEY, p.TOTAL_KEY) == (
        "role", "num-examples", "logits-round", "total",
    )  # fmt: skip
    assert (p.INIT_MODEL, p.INIT_SOFT_LABELS, p.STUDENT_KEY) == ("model", "soft-labels", "student")
    assert (p.EVAL_WEIGHT, p.LATE_KEY, p.COMPUTE_KEY, p.EDGE_GROUP_KEY) == (
        "tasks", "late", "compute_s", "edge-group",
    )  # fmt: skip
    assert (p.TRAIN_LOSS_KEY, p.TRAIN_ACCURACY_KEY, p.SUMMED_METRICS) == (
        "train_loss", "train_accuracy", ("episodes", "train_steps"),
    )  # fmt: skip
    assert p.EVAL_METRICS == (
        "qoe", "drop_ratio", "delay", "energy_total", "offload_ratio", "tasks",
    )  # fmt: skip
    assert p.ROLES == ("x", "u", "v")

"""Property-based fuzzing of the config boundary: any value in any field gives a valid config
or a ConfigError naming a field, never another exception (a bad config fails before any work,
with a message that says what to fix)."""

from __future__ import annotations

import copy
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from common.config import ConfigError, compose
from common.fed.settings import federated_from_dict
from experiments.tasks.study_settings import study_from_dict

EXAMPLES = int(os.environ.get("KECO_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=4 * EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip

_BASE = OmegaConf.to_container(compose(["experiment=federation"]), resolve=True)
_STUDY = OmegaConf.to_container(compose(["experiment=stragglers"]), resolve=True)


def _leaves(tree, prefix=()):
    """Every (path, value) of a nested dict (lists count as values)."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


GROUPS = ("scenario", "model", "student", "he", "federation", "strategy", "experiment")
PATHS = sorted(p for p, _ in _leaves(_BASE) if p[0] in GROUPS)
STUDY_PATHS = sorted(p for p, _ in _leaves(_STUDY["experiment"]) if p[0] != "report")

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.integers(-5, 100), max_size=4), st.lists(st.floats(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip


def _set(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3))
def test_any_federation_value_is_accepted_or_refused_with_a_config_error(changes):
    raw = copy.deepcopy(_BASE)
    for path, value in changes:
        _set(raw, path, value)
    try:
        federated_from_dict(raw, "/tmp/keco-config-fuzz")
    except ConfigError as err:
        assert str(err)  # a message that names what to fix


@FUZZ
@given(
    changes=st.lists(st.tuples(st.sampled_from(STUDY_PATHS), VALUES), min_size=1, max_size=3),
    unknown=st.booleans(),
)
def test_any_study_value_is_accepted_or_refused_with_a_config_error(changes, unknown):
    raw = copy.deepcopy(_STUDY["experiment"])
    for path, value in changes:
        _set(raw, path, value)
    if unknown:
        raw["sweep"]["not_a_field"] = 1
    try:
        study_from_dict(raw)
    except ConfigError as err:
        assert str(err)
    else:
        assert not unknown  # an unknown key is always refused

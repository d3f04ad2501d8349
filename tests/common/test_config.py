"""The config boundary: presets compose under Hydra and bad values fail naming the field."""

import pytest
from hydra import compose, initialize_config_dir

from common.config import CONF_DIR, ConfigError
from common.mec.scenario import PRESETS, load_scenario, scenario_from_dict


@pytest.mark.parametrize("preset", PRESETS)
def test_hydra_composition_matches_loader(preset):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="simulate", overrides=[f"scenario={preset}"])
    assert scenario_from_dict(cfg.scenario) == load_scenario(preset)


def test_preset_values():
    t = load_scenario("tang2020")
    assert (t.n_devices, t.n_edges, t.local_ghz, t.edge_ghz, t.rate_mbps) == (
        50,
        5,
        2.5,
        (41.8,),
        14,
    )
    assert (t.task_mbit_min, t.task_mbit_max, t.arrival_prob, t.deadline_slots) == (2, 5, 0.3, 10)
    q = load_scenario("qeco")
    assert q.density_gcycles_per_mbit == (0.197, 0.297, 0.397)
    assert q.alpha_modes == (0.25, 0.5, 0.75) and q.p_tx_w == 2.3
    k = load_scenario("keco")
    assert k.n_edges == 32 and len(k.edge_ghz_array()) == 32 and k.task_volume == 8500


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("rate_mbps", -1.0, "scenario.rate_mbps"),
        ("deadline_slots", 0, "scenario.deadline_slots"),
        ("task_mbit_min", 6.0, "scenario.task_mbit_max"),
        ("n_devices", 2.5, "scenario.n_devices"),
        ("arrival_prob", 1.5, "scenario.arrival_prob"),
        ("energy", "nuclear", "scenario.energy"),
        ("edge_ghz", [1.0, 2.0], "scenario.edge_ghz"),
        ("slot_s", float("nan"), "scenario.slot_s"),
        ("colour", "blue", "unknown field"),
    ],
)
def test_bad_values_name_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        load_scenario("tang2020", **{field: value})


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid presets are"):
        load_scenario("atlantis")


def test_bad_pressure():
    with pytest.raises(ConfigError, match="scenario.pressure.cpu_level"):
        load_scenario("keco", pressure={"cpu_level": 1.0})


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["federation.fraction_train=0.3", "federation.min_replies=5"], "federation.min_replies"),
        (["seed=-1"], "seed must be an integer >= 0"),
        (["strategy=fedavg", "he=off", "strategy.delta.start=0.5"], "strategy.delta"),
        (["strategy.local.logits_source=oracle"], "strategy.local.logits_source"),
        (["experiment.heuristics=[psychic]"], "experiment.heuristics"),
    ],
)
def test_federation_config_errors_name_the_field(overrides, match):
    from common.config import compose
    from common.fed.settings import federated_from_dict

    with pytest.raises(ConfigError, match=match):
        federated_from_dict(compose(["experiment=federation", *overrides]), "/tmp/unused")

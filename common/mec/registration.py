"""Gymnasium ids of the simulator, registered on ``import common.mec``.

=============================  ==========================================================
id                             environment
=============================  ==========================================================
``keco/MEC-v0``                :class:`common.mec.env.MECEnv`; ``scenario=`` picks the preset
                               (default ``qeco``), any scenario field is a keyword
``keco/MEC-<preset>-v0``       the same with ``scenario=<preset>`` (``tang2020``, ``qeco``,
                               ``seed001``, ``keco``)
=============================  ==========================================================

Every id also has a vector entry point, :class:`common.mec.vector.MECVectorEnv` (E episodes in
one batched simulator): ``gymnasium.make_vec(id, num_envs=E,
vectorization_mode="vector_entry_point")``.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from common.mec.scenario import PRESETS

NAMESPACE = "keco"
ENV_ID = f"{NAMESPACE}/MEC-v0"
PRESET_IDS = {preset: f"{NAMESPACE}/MEC-{preset}-v0" for preset in PRESETS}
ENTRY_POINT = "common.mec.env:MECEnv"
VECTOR_ENTRY_POINT = "common.mec.vector:MECVectorEnv"


def register_envs() -> list[str]:
    """Register :data:`ENV_ID` and one id per preset (idempotent); returns the ids."""
    ids = {ENV_ID: {}} | {env_id: {"scenario": p} for p, env_id in PRESET_IDS.items()}
    for env_id, kwargs in ids.items():
        if env_id not in registry:
            register(
                id=env_id,
                entry_point=ENTRY_POINT,
                vector_entry_point=VECTOR_ENTRY_POINT,
                kwargs=kwargs,
                disable_env_checker=False,
            )
    return list(ids)

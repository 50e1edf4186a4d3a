"""Built-in schedulers, one module per kind: ``model_free`` (SHAC/BPTT/MIX through the simulator),
``dyna`` (MB-MIX), ``ahac`` (AHAC's contact-aware adaptive horizon) and ``agree`` (a horizon that follows
the split-half agreement of the policy gradient; ours). Recipe table ``[scheduler]``.

None of them imports torch, so they load with the plugin itself (the estimators' classes load lazily)."""
from __future__ import annotations

import mbmix_fw as mb

from .agree import Agree, AgreeConfig
from .ahac import Ahac, AhacConfig
from .dyna import MODEL_ERROR_METRIC, STATE_ERROR_METRIC, Dyna, DynaConfig
from .model_free import ModelFree, ModelFreeConfig

__all__ = ["Agree", "AgreeConfig", "Ahac", "AhacConfig", "Dyna", "DynaConfig", "MODEL_ERROR_METRIC",
           "ModelFree", "ModelFreeConfig", "STATE_ERROR_METRIC"]


@mb.hookimpl
def register_schedulers(register):
    register(ModelFreeConfig, ModelFree)
    register(DynaConfig, Dyna)
    register(AhacConfig, Ahac)
    register(AgreeConfig, Agree)

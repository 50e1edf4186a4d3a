"""Built-in policy-gradient estimators: ``shac``, ``mix`` (MB-MIX) and ``bptt``.

Recipe table ``[estimator]``. One setting, not a copied class, is each ablation: ``mix`` with
``lam = 1`` is ``shac`` with ``horizon = H_max`` (the same gradient, to round-off).
"""
from __future__ import annotations

import mbmix_fw as mb

from .configs import BpttConfig, MixConfig, ShacConfig

# The estimator classes import torch: they load on first use, not at registration.
__getattr__ = mb.lazy_attributes(__name__, {"Shac": ".shac", "Mix": ".mix", "Bptt": ".bptt"})


@mb.hookimpl
def register_estimators(register):
    register(ShacConfig, mb.lazy_factory(f"{__name__}.shac:Shac"))
    register(MixConfig, mb.lazy_factory(f"{__name__}.mix:Mix"))
    register(BpttConfig, mb.lazy_factory(f"{__name__}.bptt:Bptt"))


__all__ = ["Bptt", "BpttConfig", "Mix", "MixConfig", "Shac", "ShacConfig"]

"""Warp-lang simulators for mbmix-fw: the ``cloth_fold`` env (a differentiable cloth folded by grippers).

Registration imports only the config model (pydantic): warp and torch load when a run builds the env, so
``mbmix-fw plugins`` stays instant and every other recipe runs without the ``[warp]`` extra. Without it,
``mbmix-fw plugins`` lists ``cloth_fold`` as needing the extra, and building it fails with the install
command (``pip install 'mbmix-fw[warp]'``).
"""
from __future__ import annotations

import mbmix_fw as mb

from .configs import ClothFoldConfig

__all__ = ["ClothFold", "ClothFoldConfig", "make_cloth_fold"]

__getattr__ = mb.lazy_attributes(__name__, {"ClothFold": ".cloth"})


make_cloth_fold = mb.lazy_factory(f"{__name__}.cloth:ClothFold", requires=("warp",), extra="warp")
"""Factory: checks that warp is installed (else the install hint), then builds the env."""


@mb.hookimpl
def register_envs(register):
    register(ClothFoldConfig, make_cloth_fold)

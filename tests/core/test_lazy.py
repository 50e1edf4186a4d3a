"""Deferred plugin imports: names and factories resolve on first use, not at registration."""
from __future__ import annotations

import subprocess
import sys

import pytest

import mbmix_fw as mb


def test_lazy_factory_imports_the_class_only_when_called():
    code = (
        "import sys, mbmix_fw as mb\n"
        "make = mb.lazy_factory('mbmix_toy.pendulum:Pendulum')\n"
        "assert 'mbmix_toy.pendulum' not in sys.modules and 'torch' not in sys.modules\n"
        "import mbmix_toy\n"
        "env = make(mbmix_toy.PendulumConfig(num_envs=3), mb.BuildContext.cpu())\n"
        "assert type(env).__name__ == 'Pendulum' and env.num_envs == 3\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_lazy_factory_rejects_a_target_without_attribute():
    with pytest.raises(ValueError, match="package.module:Name"):
        mb.lazy_factory("mbmix_toy.pendulum")


def test_lazy_attributes_resolve_known_names_and_refuse_others():
    getattr_ = mb.lazy_attributes("mbmix_toy", {"LQR": ".lqr"})
    assert getattr_("LQR").__name__ == "LQR"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        getattr_("Nope")

"""Components say what they read from each other: a scheduler that reads a metric no component of the run
reports is refused at build, with one line (it would otherwise read a default forever)."""
from __future__ import annotations

import pytest

import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer
from mbmix_fw.contracts.metrics import unproduced

GATED = {
    "run": {"iterations": 1, "eval_envs": 2, "device": "cpu"},
    "env": {"kind": "pendulum", "num_envs": 4},
    "world_model": {"kind": "sobolev_mlp", "hidden": [8], "probes": 1, "batch_size": 8},
    "estimator": {"kind": "mix", "lam": 0.9, "horizon": 4},
    "scheduler": {"kind": "dyna", "model_branches": 2, "model_fit_steps": 1, "model_error_gate": 0.8},
    "policy": {"hidden": [8]}, "critic": {"hidden": [8]},
}


def build(data):
    registry = mb.load_registry()
    return make_trainer(mb.validate_recipe(data, registry), None, "cpu", registry, progress=False)


def test_a_gate_without_a_model_that_reports_its_error_is_refused_at_build(monkeypatch):
    from mbmix_world_models.model import SobolevMLP

    build(GATED)  # the built-in model reports the held-out errors the gate reads
    monkeypatch.setattr(SobolevMLP, "reports", frozenset())  # a world model whose evaluate returns {}
    with pytest.raises(mb.UserError, match=r"scheduler 'dyna' reads model/jacobian_error_a, which no component"):
        build(GATED)
    ungated = {**GATED, "scheduler": {**GATED["scheduler"], "model_error_gate": None}}
    build(ungated)  # nothing read, nothing required


def test_gating_on_both_blocks_reads_both_errors():
    from mbmix_schedulers import Dyna, DynaConfig

    assert Dyna(DynaConfig(model_error_gate=0.5, gate_on="both")).reads == {
        "model/jacobian_error_a", "model/jacobian_error_s"}
    assert Dyna(DynaConfig()).reads == frozenset()


def test_unproduced_counts_the_trainers_own_metrics_as_produced():
    assert unproduced({"eval/return", "env/steps", "model/x"}, {"model/y"}) == ["model/x"]

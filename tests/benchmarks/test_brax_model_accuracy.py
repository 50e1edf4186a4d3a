"""``benchmarks/brax_model_accuracy.py``: the contact split of its held-out errors (plain torch), and its
``--quick`` run end to end through the Brax bridge (inverted_pendulum: paths, not physics)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv
from mbmix_world_models import SobolevConfig, make_sobolev

ROOT = Path(__file__).resolve().parents[2]


def study():
    spec = importlib.util.spec_from_file_location("brax_model_accuracy", ROOT / "benchmarks" / "brax_model_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_contact_split_partitions_the_pooled_errors():
    """Each bucket's errors are the model's own evaluation of exactly its rows, and the two buckets' squared
    Jacobian errors add up to the pooled one, so the contact share is what it says."""
    bench = study()
    env = LinearEnv(state_dim=3, action_dim=2)
    g = torch.Generator().manual_seed(0)
    state, action = torch.randn(40, 3, generator=g), torch.rand(40, 2, generator=g) * 2 - 1
    held = mb.collect_jacobians(env, state, action)
    model = make_sobolev(SobolevConfig(hidden=[8], batch_size=16, probe_source="random", probes=2),
                         mb.BuildContext.cpu(seed=0).with_env(env))
    for _ in range(3):
        model.fit(mb.collect_transitions(env, state[:16], action[:16], 2, g))
    in_contact = torch.arange(40) % 3 == 0
    out = bench.evaluate(model, held, in_contact)
    assert (out["contact"]["rows"], out["free"]["rows"], out["all"]["rows"]) == (14, 26, 40)
    contact_only = model.evaluate(bench.rows(held, in_contact.nonzero().squeeze(-1)))
    assert out["contact"]["J_a"] == contact_only["model/jacobian_error_a"]
    assert out["contact"]["state"] == contact_only["model/state_error"]
    for block in ("s", "a"):
        pooled = out["all"][f"sq_error_{block}"]
        assert math.isclose(out["contact"][f"sq_error_{block}"] + out["free"][f"sq_error_{block}"], pooled, rel_tol=1e-4)
        assert math.isclose(out["all"][f"contact_share_of_J_{block}_error"],
                            out["contact"][f"sq_error_{block}"] / pooled, rel_tol=1e-9)
    assert out["all"]["contact_share_of_rows"] == 14 / 40


@pytest.mark.slow
@pytest.mark.timeout(1800)  # compiles a few Brax functions (minutes on a 2-core CPU without the JAX cache)
def test_quick_run_writes_the_json_and_the_table(tmp_path, capsys):
    pytest.importorskip("jax")
    out = tmp_path / "accuracy.json"
    assert study().main(["--quick", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["settings"]["env"] == "inverted_pendulum" and len(results["seeds"]) == 2
    for seed in results["seeds"]:
        models = seed["models"]
        assert set(models) == {"mse", "sobolev", "smooth"}
        assert all(set(m["curve"]) == {"0", "2", "4"} for m in models.values())
        # same initial weights and data: identical before any fit, apart once the Jacobian terms act
        first = [m["curve"]["0"]["all"] for m in models.values()]
        assert all(f["J_s"] == first[0]["J_s"] and f["state"] == first[0]["state"] for f in first)
        assert models["sobolev"]["curve"]["4"]["all"]["J_a"] != models["mse"]["curve"]["4"]["all"]["J_a"]
        assert all(math.isfinite(models[n]["curve"]["4"]["all"][k]) for n in models for k in ("state", "J_s", "J_a"))
        assert seed["held_out_contact_rows"] == 0  # the cart-pole's system has no contact pairs
    assert results["summary"]["sobolev"]["all"]["J_a"]["seeds"] == 2
    printed = capsys.readouterr().out
    assert "| sobolev | all |" in printed and "| smooth | contact | 0 | — |" in printed
    assert results["table"] in printed

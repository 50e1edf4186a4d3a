"""``mbmix_fw.maths.finite``: the finite check every guarded step runs (one non-finite entry anywhere must
be found, a large finite value must not be mistaken for one) and the state snapshot a rollback restores."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.maths.finite import cloned, floating_tensors
from mbmix_fw.training.run_state import nonfinite_entries


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_non_finite_entry_anywhere_is_found(bad, dtype):
    tensors = [torch.randn(4, 5, dtype=dtype), torch.randn(7, dtype=dtype), torch.randn(3, 2, 2, dtype=dtype)]
    assert bool(mb.all_finite(tensors))
    tensors[1][6] = bad
    assert not bool(mb.all_finite(tensors))
    assert not bool(mb.all_finite([torch.tensor(bad, dtype=dtype)]))  # a 0-dim loss


def test_opposite_infinities_and_large_finite_values_read_right():
    assert not bool(mb.all_finite([torch.tensor([float("inf"), -float("inf")])]))  # their sum is NaN
    near_max = torch.full((1000,), 3.0e38)  # finite float32 entries whose float32 sum would overflow
    assert bool(mb.all_finite([near_max, -near_max]))
    assert bool(mb.all_finite([None, torch.ones(2)])) and bool(mb.all_finite([]))


def test_a_state_dict_with_one_nan_deep_inside_is_non_finite():
    state = {"net": OrderedDict(w=torch.ones(3), steps=torch.tensor(4)),
             "optimizer": {"state": {0: {"exp_avg": torch.zeros(3), "step": torch.tensor(2.0)}}, "lr": 1e-3}}
    assert not nonfinite_entries(state)
    assert [t.shape for t in floating_tensors(state)] == [(3,), (3,), ()]  # the integer counter is not one
    state["optimizer"]["state"][0]["exp_avg"][1] = float("nan")
    assert nonfinite_entries(state)


def test_a_snapshot_shares_no_storage_and_restores_a_module_exactly():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    state = module.state_dict()
    snapshot = cloned({"model": state, "history": [1.5, (torch.ones(2), "x")]})
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)  # the live parameters move; the snapshot must not
    assert not torch.equal(snapshot["model"]["0.weight"], module.state_dict()["0.weight"])
    assert snapshot["model"]._metadata == state._metadata  # the versions load_state_dict reads
    assert snapshot["history"][0] == 1.5 and snapshot["history"][1][1] == "x"
    module.load_state_dict(snapshot["model"])
    for name, value in module.state_dict().items():
        assert torch.equal(value, snapshot["model"][name]), name

"""The bridged NumPy spring chain: gradients against finite differences, P probes answered by one call, and
the env around it built in the run's dtype, keeping the DiffEnv contract and training."""
import sys
from pathlib import Path

import pytest
import torch

import mbmix_fw as mb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy_spring  # noqa: E402


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    x, v, f = (0.3 * torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda *t: numpy_spring.spring(*t), (x, v, f))


def test_probes_are_answered_by_one_vjp_call(monkeypatch):
    g = torch.Generator().manual_seed(1)
    state, action = torch.randn(4, 10, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g,
                                                                                      dtype=torch.float64)
    u = mb.random_unit_vectors(4, 6, 10, g, dtype=torch.float64)
    calls = []
    vjp = numpy_spring.spring.batched_vjp
    monkeypatch.setattr(numpy_spring.spring, "batched_vjp", lambda *a: calls.append(1) or vjp(*a))
    _, probe_s, probe_a = mb.vector_jacobian_products(numpy_spring.SpringChain(), state, action, u)
    assert len(calls) == 1
    jac_s, jac_a = torch.autograd.functional.jacobian(numpy_spring.SpringChain().step, (state, action))
    for probe, jac in ((probe_s, jac_s), (probe_a, jac_a)):  # jac [N, S, N, ·]: rows are independent
        per_row = torch.stack([jac[n, :, n] for n in range(4)])
        torch.testing.assert_close(probe, torch.einsum("npi,nij->npj", u, per_row))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_env_follows_the_runs_dtype_and_keeps_the_contract(dtype):
    from mbmix_fw.testing import check_env

    env = numpy_spring.SpringChainEnv(num_envs=4, ctx=mb.BuildContext.cpu(dtype=dtype))
    state = env.reset(4, torch.Generator().manual_seed(0))
    assert state.dtype == dtype and env.step(state, torch.zeros(4, 4, dtype=dtype)).dtype == dtype
    if dtype == torch.float64:
        check_env(numpy_spring.SpringChainEnv(num_envs=4, ctx=mb.BuildContext.cpu(dtype=dtype)))


def test_shac_trains_through_the_bridged_env():
    from mbmix_estimators import Shac, ShacConfig
    from mbmix_schedulers import ModelFree, ModelFreeConfig

    env = numpy_spring.SpringChainEnv(num_envs=4, episode_length=8, ctx=mb.BuildContext.cpu(dtype=torch.float64))
    trainer = mb.Trainer(env, Shac(ShacConfig(horizon=4)), ModelFree(ModelFreeConfig()),
                         run=mb.RunSettings(iterations=2, eval_envs=2, dtype="float64"), progress=False)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))

"""Checks that need a CUDA device (marked ``cuda``: skipped without one; ``pytest -m cuda`` or
``benchmarks/gpu_suite.py`` on a GPU machine): the warp cloth and the Brax bridge on CUDA agree with the CPU
and with finite differences, captured CUDA graphs equal plain launches, and a short training run works.

Written without a GPU at hand (issue 17): each compares CUDA against the CPU path the rest of the suite
checks, so a failure here is a CUDA-specific defect (streams, graphs, DLPack on the device).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mbmix_fw as mb

pytestmark = pytest.mark.cuda
F64 = torch.float64


def cloth(device, **fields):
    pytest.importorskip("warp")
    from mbmix_warp import ClothFoldConfig, make_cloth_fold

    return make_cloth_fold(ClothFoldConfig(**{"num_envs": 3, "grid_size": 4, "substeps": 8, **fields}),
                           mb.BuildContext(device=device, dtype=F64))


def test_cloth_step_and_gradient_on_cuda_equal_the_cpu_and_finite_differences():
    cpu, gpu = cloth("cpu"), cloth("cuda")
    g = torch.Generator().manual_seed(0)
    s0 = cpu.reset(3, g).to(F64)
    a = (2 * torch.rand(3, cpu.action_dim, generator=g, dtype=F64) - 1) * 0.9
    u = torch.randn(s0.shape, generator=g, dtype=F64)

    def dot(env, s, act):
        return (env.step(s, act) * u.to(s.device)).sum()

    results = {}
    for name, env in (("cpu", cpu), ("cuda", gpu)):
        s = s0.to(env.device).clone().requires_grad_(True)
        act = a.to(env.device).clone().requires_grad_(True)
        value = dot(env, s, act)
        results[name] = (value.detach().cpu(), *(t.cpu() for t in torch.autograd.grad(value, (s, act))))
    torch.testing.assert_close(results["cuda"], results["cpu"], rtol=1e-9, atol=1e-9)
    direction = torch.randn(a.shape, generator=g, dtype=F64).cuda()
    eps = 1e-6
    s, act = s0.cuda(), a.cuda()
    fd = (dot(gpu, s, act + eps * direction) - dot(gpu, s, act - eps * direction)) / (2 * eps)
    torch.testing.assert_close(fd.cpu(), (results["cuda"][2] * direction.cpu()).sum(), rtol=1e-5, atol=1e-7)


def test_cloth_cuda_graphs_equal_plain_launches_and_capture_without_warning(recwarn):
    with_graphs, plain = cloth("cuda"), cloth("cuda")
    plain.sim.use_graphs = False
    s0 = with_graphs.reset(3, torch.Generator(device="cuda").manual_seed(1)).to(F64)
    a = torch.zeros(3, with_graphs.action_dim, dtype=F64, device="cuda")
    out = []
    for env in (with_graphs, plain):
        s = s0.clone().requires_grad_(True)
        step = env.step(s, a)
        out.append((step.detach(), torch.autograd.grad(step.square().sum(), s)[0]))
    assert all(ws.graphs and all(ws.graphs.values()) for ws in with_graphs.sim._workspaces.values())
    assert not [w for w in recwarn if "graph capture failed" in str(w.message)]
    torch.testing.assert_close(out[0], out[1], rtol=1e-12, atol=1e-12)


def test_brax_bridge_on_cuda_matches_the_cpu_and_finite_differences():
    jax = pytest.importorskip("jax")
    try:
        jax.devices("cuda")
    except RuntimeError:
        pytest.skip("jax has no CUDA backend here")
    from mbmix_brax import JaxFunction
    import jax.numpy as jnp

    fn = JaxFunction(lambda x, y: (jnp.sin(x) * y[:, :1], jnp.sum(x, -1) > 0), (True, False), x64=True, name="poly")
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, 2, generator=g, dtype=F64)
    xc, yc = x.cuda().requires_grad_(True), y.cuda().requires_grad_(True)
    out, flag = fn(xc, yc)
    assert out.device.type == "cuda" and not flag.requires_grad
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b)[0], (xc, yc))
    u = torch.randn(5, 3, 4, dtype=F64, device="cuda")
    gx, gy = torch.autograd.grad(out, (xc, yc), u, is_grads_batched=True, retain_graph=True)
    torch.testing.assert_close(gx[0], torch.autograd.grad(out, xc, u[0], retain_graph=True)[0])


def test_a_short_training_run_on_cuda(tmp_path):
    from mbmix_fw.commands.cli import main

    out = tmp_path / "run"
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "pendulum_shac.toml"
    code = main(["run", str(recipe), "--device", "cuda", "--out", str(out), "--no-progress",
                 "--set", "run.iterations=3", "--set", "env.num_envs=64"])
    assert code == 0
    assert (out / "metrics.csv").read_text().count("\n") >= 4

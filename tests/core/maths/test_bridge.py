"""``mb.ExternalFunction``: the public bridge for external differentiable steps (mbmix_fw/maths/bridge.py).

The external step here is NumPy (a foreign library torch cannot see into): ``y = sin(x)·w``, ``flag = x > 0``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mbmix_fw as mb

REPO = Path(__file__).resolve().parents[3]


def numpy_forward(inputs):
    x, w = (mb.to_foreign(t, np.from_dlpack) for t in inputs)
    return mb.from_foreign(np.sin(x) * w), mb.from_foreign((x > 0).astype(x.dtype))


def numpy_vjp(inputs, cotangents):
    x, w = (mb.to_foreign(t, np.from_dlpack) for t in inputs)
    gy = mb.to_foreign(cotangents[0], np.from_dlpack)
    return mb.from_foreign(gy * np.cos(x) * w), mb.from_foreign(gy * np.sin(x))


def make(**overrides) -> mb.ExternalFunction:
    options = dict(forward=numpy_forward, vjp=numpy_vjp, name="sine", outputs=("y", "flag"),
                   non_differentiable=("flag",))
    return mb.ExternalFunction(**{**options, **overrides})


def inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(3, 4, generator=g, dtype=dtype, requires_grad=True),
            torch.randn(3, 4, generator=g, dtype=dtype, requires_grad=True))


def test_gradient_matches_finite_differences_and_flags_carry_none():
    fn = make()
    assert torch.autograd.gradcheck(lambda x, w: fn(x, w)[0], inputs())
    y, flag = fn(*inputs())
    assert y.requires_grad and not flag.requires_grad


def test_residual_backward_equals_recompute_and_runs_no_second_forward():
    forwards = []

    def with_residuals(inputs):
        forwards.append(1)
        return numpy_forward(inputs), inputs  # the residuals: here simply the inputs

    fn = make(forward_with_residuals=with_residuals, forward=lambda i: pytest.fail("plain forward under autograd"))
    x, w = inputs()
    fn(x, w)[0].sum().backward()
    x2, w2 = inputs()
    make()(x2, w2)[0].sum().backward()
    assert fn.backward_mode == "residuals" and len(forwards) == 1
    torch.testing.assert_close((x.grad, w.grad), (x2.grad, w2.grad))


def test_cotangents_are_none_for_flags_and_for_unused_outputs_unless_materialized():
    seen = []

    def vjp(saved, cotangents):
        seen.append(cotangents)
        return numpy_vjp(saved, (torch.zeros_like(saved[0]) if cotangents[0] is None else cotangents[0], None))

    fn = make(vjp=vjp, materialize_cotangents=False)
    x, w = inputs()
    y, flag = fn(x, w)
    (y.sum() + flag.sum()).backward()
    assert seen[0][0] is not None and seen[0][1] is None


def test_batched_cotangents_one_call_equal_the_loop():
    calls = []

    def batched(saved, cotangents):
        calls.append(cotangents[0].shape)
        return numpy_vjp(saved, cotangents)  # NumPy broadcasts the probe axis

    fn = make(batched_vjp=batched)
    x, w = inputs()
    y = fn(x, w)[0]
    u = torch.randn(5, 3, 4, dtype=torch.float64)
    gx, gw = torch.autograd.grad(y, (x, w), u, is_grads_batched=True, retain_graph=True)
    assert calls == [torch.Size([5, 3, 4])]
    for p in range(5):
        torch.testing.assert_close((gx[p], gw[p]), torch.autograd.grad(y, (x, w), u[p], retain_graph=True))


def test_batched_cotangents_without_batched_vjp_loop_over_vjp():
    fn = make()
    x, w = inputs()
    y = fn(x, w)[0].exp()  # torch ops around the bridge are batched by torch itself
    u = torch.randn(3, 3, 4, dtype=torch.float64)
    (gx,) = torch.autograd.grad(y, (x,), u, is_grads_batched=True, retain_graph=True)
    for p in range(3):
        torch.testing.assert_close(gx[p], torch.autograd.grad(y, (x,), u[p], retain_graph=True)[0])


def test_second_derivatives_are_an_error_not_zeros():
    x, w = inputs()
    y = make()(x, w)[0]
    with pytest.raises(mb.BridgeError, match="sine: no second derivatives"):
        torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)


@pytest.mark.parametrize("bad, message", [
    (lambda i: (numpy_forward(i)[0][None], numpy_forward(i)[1]), r"sine: output 'y' has shape \(1, 3, 4\), expected \(3, 4\)"),
    (lambda i: (numpy_forward(i)[0].float(), numpy_forward(i)[1]), "sine: output 'y' is torch.float32, the inputs torch.float64"),
    (lambda i: (torch.empty(3, 4, dtype=torch.float64, device="meta"), numpy_forward(i)[1]), "sine: output 'y' is on meta"),
    (lambda i: numpy_forward(i)[:1], r"sine: forward must return 2 tensors \(y, flag\), got 1"),
])
def test_a_wrong_output_is_an_error_naming_function_and_output(bad, message):
    fn = make(forward=bad, output_shapes=lambda i: (i[0].shape, i[0].shape))
    for grad in (True, False):
        x, w = inputs()
        with torch.set_grad_enabled(grad), pytest.raises(mb.BridgeError, match=message):
            fn(x, w)


@pytest.mark.parametrize("bad, message", [
    (lambda i, c: (numpy_vjp(i, c)[0].sum(0), numpy_vjp(i, c)[1]),  # broadcastable: torch would sum it
     r"sine: gradient of input 0 is \(4,\) torch.float64 on cpu, expected \(3, 4\)"),
    (lambda i, c: (numpy_vjp(i, c)[0].float(), numpy_vjp(i, c)[1]), "sine: gradient of input 0 is .*float32"),
])
def test_a_wrong_gradient_is_an_error(bad, message):
    x, w = inputs()
    y = make(vjp=bad)(x, w)[0]
    with pytest.raises(mb.BridgeError, match=message):
        y.sum().backward()


def test_non_finite_gradients_pass_by_default_and_are_an_error_only_when_checked():
    """By default a NaN adjoint passes (the trainer masks that env and the others learn); ``check_finite``
    makes it an error for a plugin's own tests, unless the cotangents were not finite already."""
    nan_vjp = lambda i, c: (numpy_vjp(i, c)[0] / 0.0, None)  # noqa: E731
    x, w = inputs()
    make(vjp=nan_vjp)(x, w)[0].sum().backward()
    assert not torch.isfinite(x.grad).all()
    x, w = inputs()
    with pytest.raises(mb.BridgeError, match="sine: the gradient of input 0 is not finite"):
        make(vjp=nan_vjp, check_finite=True)(x, w)[0].sum().backward()
    x, w = inputs()
    (make(check_finite=True)(x, w)[0] * float("nan")).sum().backward()  # NaN cotangent: not the bridge's fault


def test_one_envs_nan_adjoint_does_not_stop_the_others_learning():
    """CONTRIBUTING, "Design decisions" (one bad env does not stop the others learning): a bridged simulator
    whose adjoint is NaN for one env trains on; that env's action gradient is zeroed and counted, the run
    does not end."""
    from mbmix_fw.testing import LinearEnv, tiny_trainer

    def vjp(inputs, cotangents):
        (g,) = cotangents
        grads = (g.clone(), g.clone())
        grads[1][0] = float("nan")  # env 0's action gradient
        return grads

    step = mb.ExternalFunction(forward=lambda i: (i[0] + 0.1 * i[1],), vjp=vjp, name="nan for env 0",
                               outputs=("next_state",))

    class Bridged(LinearEnv):
        def step(self, state, action, generator=None):
            return step(state, action)[0]

    trainer = tiny_trainer(Bridged(num_envs=4, episode_length=10, state_dim=1, action_dim=1), iterations=2)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.train()
    assert trainer.iteration == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    assert all(row.get("guard/nonfinite_action_grads", 0) > 0 for row in trainer.log.history[1:])


@pytest.mark.parametrize("where, direction", [("forward", "forward"), ("vjp", "vjp (backward)"),
                                              ("batched_vjp", "batched_vjp (backward)")])
def test_an_exception_inside_the_callables_names_the_function_and_the_direction(where, direction):
    def broken(*args):
        raise ValueError("operands could not be broadcast together\nsecond line")

    fn = make(**{where: broken})
    x, w = inputs()
    with pytest.raises(mb.BridgeError) as info:
        y = fn(x, w)[0]
        if where == "batched_vjp":
            torch.autograd.grad(y, (x, w), torch.ones(2, 3, 4, dtype=torch.float64), is_grads_batched=True)
        else:
            y.sum().backward()
    assert str(info.value) == f"sine: {direction} raised ValueError: operands could not be broadcast together"
    assert isinstance(info.value.__cause__, ValueError)  # the original, for -v


def test_a_bridge_contract_error_is_a_user_error_exit_2(tmp_path, monkeypatch, capsys):
    """From the CLI: one line naming the function, exit 2 (1 is for internal errors)."""
    import types
    from typing import Literal

    import mbmix_estimators
    from mbmix_fw.commands.cli import main
    from mbmix_fw.testing import LinearEnv

    wrong = mb.ExternalFunction(forward=lambda i: (i[0][:, :1],), vjp=numpy_vjp, name="short step",
                                outputs=("next_state",), output_shapes=lambda i: (i[0].shape,))

    class ShortEnv(LinearEnv):
        def step(self, state, action, generator=None):
            return wrong(state, action)[0]

    class ShortConfig(mb.EnvConfig):
        kind: Literal["short"] = "short"

    plugin = types.ModuleType("bridge_test_plugin")
    plugin.register_envs = mb.hookimpl(lambda register: register(
        ShortConfig, lambda c, ctx: ShortEnv(num_envs=4, episode_length=6, ctx=ctx)))
    recipe = tmp_path / "short.toml"
    recipe.write_text('[run]\niterations = 1\ndevice = "cpu"\neval_envs = 2\n[env]\nkind = "short"\n'
                      '[estimator]\nkind = "shac"\nhorizon = 2\n[policy]\nhidden = [8]\n[critic]\nhidden = [8]\n')
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"],
                registry=mb.make_registry(plugin, mbmix_estimators, __import__("mbmix_schedulers")))
    err = capsys.readouterr().err
    assert code == 2, err
    # the initial evaluation (2 eval envs) steps first
    assert err.startswith("mbmix-fw: error: short step: output 'next_state' has shape (2, 1), expected (2, 3)")
    assert len(err.strip().splitlines()) == 1


def test_bad_inputs_are_errors_naming_the_function():
    x, w = inputs(torch.float16)
    with pytest.raises(mb.BridgeError, match="sine: input 0 is torch.float16"):
        make()(x, w)
    with pytest.raises(ValueError, match="sine: non_differentiable names unknown outputs"):
        make(non_differentiable=("done",))


def test_the_contributing_example_passes_its_tests():
    example = REPO / "examples" / "mbmix-example-bridge"
    env = {**__import__("os").environ, "PYTHONPATH": f"{REPO}{__import__('os').pathsep}{REPO / 'plugins'}"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example / "tests")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_materialized_cotangents_are_zeros_for_unused_outputs_and_none_for_flags():
    seen = []

    def forward(inputs):
        y, flag = numpy_forward(inputs)
        return y, flag, 2 * y

    def vjp(saved, cotangents):
        seen.append(cotangents)
        return numpy_vjp(saved, (cotangents[0] + 2 * cotangents[2],))

    x, w = inputs()
    y, flag, twice = make(forward=forward, vjp=vjp, outputs=("y", "flag", "twice"))(x, w)
    twice.sum().backward()
    assert torch.equal(seen[0][0], torch.zeros(3, 4, dtype=torch.float64)) and seen[0][1] is None
    torch.testing.assert_close(x.grad, 2 * torch.cos(x.detach()) * w.detach())

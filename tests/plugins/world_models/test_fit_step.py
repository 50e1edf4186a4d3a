"""``mbmix_world_models.fit_step``: the optimiser both built-in world models step, and the finite check
(:func:`mbmix_fw.all_finite`) still skipping a fit step on a NaN in one entry of one gradient."""
from __future__ import annotations

import torch

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv
from mbmix_world_models import SobolevConfig, make_sobolev
from mbmix_world_models.fit_step import adamw


def test_the_model_steps_on_the_fused_kernel_and_skips_a_nan_gradient():
    env = LinearEnv(num_envs=2, episode_length=4)
    model = make_sobolev(SobolevConfig(hidden=[16], probes=1, batch_size=8), mb.BuildContext.cpu().with_env(env))
    assert model.optimizer.defaults["fused"] is True
    assert adamw([torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.0).defaults["fused"] is True
    gen = torch.Generator().manual_seed(0)
    s, a = torch.randn(8, env.state_dim, generator=gen), torch.randn(8, env.action_dim, generator=gen)
    u = torch.nn.functional.normalize(torch.randn(8, 1, env.state_dim, generator=gen), dim=-1)
    batch = mb.TransitionBatch(s, a, env.step(s, a), u, u @ env.A, u @ env.B)
    assert "model/skipped" not in model.fit(batch)
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    weight = next(model.net.parameters())
    hook = weight.register_hook(lambda g: g.index_put((torch.tensor([0]),) * g.dim(), torch.tensor(float("nan"))))
    assert model.fit(batch) == {"model/skipped": 1.0}  # one NaN entry of one parameter's gradient
    hook.remove()
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, before[name]), name

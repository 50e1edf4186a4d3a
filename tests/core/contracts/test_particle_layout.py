"""The optional particle layout of an env: the cloth declares one that matches its state and step exactly,
and a layout that does not match the state is a one-line error naming the env and the field."""
from __future__ import annotations

import attrs
import pytest
import torch

import mbmix_fw as mb

pytest.importorskip("warp")
from mbmix_warp import ClothFold, ClothFoldConfig  # noqa: E402


@pytest.fixture(scope="module")
def cloth():
    return ClothFold(ClothFoldConfig(num_envs=2, grid_size=5, grippers=[(0, 0), (0, -1), (2, 2)]),
                     mb.BuildContext(dtype=torch.float64))


def test_cloth_layout_is_valid_and_counts_its_springs(cloth):
    layout = mb.checked_particle_layout(cloth, "cloth_fold")
    n = 5
    stretch, shear, bend = 2 * n * (n - 1), 2 * (n - 1) ** 2, 2 * n * (n - 2)
    assert layout.kinds.bincount().tolist() == [stretch, shear, bend]
    assert layout.driven.tolist() == [0, n - 1, 2 * n + 2]
    x = cloth.reset(1)[0, layout.positions].reshape(-1, 3)  # rest lengths agree with the flat grid
    i, j = layout.neighbours.T
    yaw_free = (x[i, :2] - x[j, :2]).norm(dim=-1)
    assert torch.allclose(yaw_free, layout.rest_lengths, atol=0.02)


def test_cloth_exact_step_is_the_simulators_step(cloth):
    layout = cloth.particle_layout()
    gen = torch.Generator().manual_seed(3)
    state = cloth.reset(4, gen)
    action = torch.rand(4, cloth.action_dim, generator=gen, dtype=torch.float64) * 3 - 1.5  # some clamp
    action[0, 2] = -1.0  # pushes the first gripper into the ground: its height stops at the radius
    nxt = cloth.step(state, action)
    pos, vel, extra = layout.exact_step(state, action)
    assert torch.equal(nxt[:, layout.positions].reshape(4, -1, 3)[:, layout.driven], pos)
    assert torch.equal(nxt[:, layout.velocities].reshape(4, -1, 3)[:, layout.driven], vel)
    assert torch.equal(nxt[:, layout.extra], extra)


def _broken(cloth, **changes):
    class Broken(ClothFold):
        def particle_layout(self):
            return attrs.evolve(ClothFold.particle_layout(self), **changes)
    env = Broken.__new__(Broken)
    env.__dict__.update(cloth.__dict__)
    return env


@pytest.mark.parametrize("changes, expected", [
    (dict(velocities=slice(75, 149)), "particle_layout().velocities: slice 75:149 holds 74 entries, expected "
                                      "particles × dim = 25 × 3 = 75"),
    (dict(extra=slice(150, 200)), "particle_layout().extra: slice 150:200 is outside the state [0, 159)"),
    (dict(extra=slice(150, 158)), "particle_layout().extra: the slices end at 158, the state has 159"),
    (dict(velocities=slice(70, 145)), "particle_layout().velocities: slice 70:145 overlaps entry 75"),
    (dict(neighbours=[[0, 1], [1, 25]], rest_lengths=[1.0, 1.0], edge_kinds=None),
     "particle_layout().neighbours: particle index 25 is out of range [0, 25)"),
    (dict(neighbours=[[0, 1], [1, 0]], rest_lengths=[1.0, 1.0], edge_kinds=None),
     "particle_layout().neighbours: 1 pair(s) listed twice"),
    (dict(neighbours=[[0, 1]], rest_lengths=[1.0, 1.0], edge_kinds=None), "particle_layout().rest_lengths: "
                                                                           "expected shape [1]"),
    (dict(driven=[0, 4, 0]), "particle_layout().driven: particle 0 is listed twice"),
    (dict(driven=[0, 30]), "particle_layout().driven: particle index 30 is out of range [0, 25)"),
    (dict(num_edge_kinds=2), "particle_layout().edge_kinds: values must be in [0, num_edge_kinds = 2)"),
    (dict(absolute_axes=(3,)), "particle_layout().absolute_axes: must be distinct axes in [0, 3)"),
])
def test_a_layout_that_does_not_match_the_state_names_env_and_field(cloth, changes, expected):
    with pytest.raises(mb.UserError) as info:
        mb.checked_particle_layout(_broken(cloth, **changes), "cloth_fold")
    assert str(info.value) == f"env 'cloth_fold': {expected}" or str(info.value).startswith(
        f"env 'cloth_fold': {expected}"), str(info.value)


def test_an_env_without_a_layout_has_none():
    from mbmix_toy import Pendulum, PendulumConfig
    assert mb.checked_particle_layout(Pendulum(PendulumConfig())) is None

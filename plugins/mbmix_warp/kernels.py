"""The cloth's warp kernel: one semi-implicit Euler substep of every particle of every cloth.

One kernel, launched over ``(num_envs, particles)``, gathers each particle's forces from a fixed stencil
of grid neighbours (no atomics: the forward pass is deterministic on CPU and GPU) and integrates it. It is
generic over the float type (``float32`` for training, ``float64`` for finite-difference checks) and
differentiated by warp's generated adjoint kernels, which :mod:`mbmix_warp.bridge` launches itself (no tape).

Model (the config docstring gives units and defaults):

- **springs** between grid neighbours, each ``f = k (|d| - L) d̂ + c ((v_q - v_p)·d̂) d̂`` with the rest
  length ``L`` of the flat grid: *stretch* (4 direct neighbours, ``k_stretch``), *shear* (4 diagonal
  neighbours, ``k_shear``) and *bending* (4 neighbours two cells away, ``k_bend``; the struct's
  ``stretch_stiffness``, ``shear_stiffness``, ``bend_stiffness``); the damping
  coefficient ``c`` is shared. ``|d|`` is ``sqrt(d·d + 1e-12)`` so the force stays finite even when two
  particles coincide.
- **ground** (the plane ``z = 0``): penetration ``δ = w·softplus((r - z)/w)``, normal force
  ``max(0, k_contact·δ - d·m·g·tanh(k_contact·δ/(m·g))·v_z)`` (``k_contact``: ``ground_stiffness``;
  Hunt–Crossley damping, vanishing with δ,
  saturating at ``d·m·g``, never pulling) and regularised Coulomb
  friction; the law and its reasons are in :mod:`mbmix_warp.ground`, the torch reference this kernel is tested
  against.
- **gravity** ``-g ẑ`` and air drag ``-drag·m·v``.
- **grippers**: a pinned particle ignores its forces; after substep ``k`` it sits at
  ``gripper + elapsed·gripper_velocity`` (``elapsed = (k+1)·dt``) with the gripper's velocity.

**Bending, a documented choice** (found in a review of the physics): the bending springs join particles two
cells apart, so for a flat cloth bent by a small angle ``θ`` their length changes by ``O(θ²)`` and the
bending stiffness of a *flat* cloth is zero at first order: the cloth resists folding only through geometry
(and more once curved). That is what the fold task wants (a cloth that folds under gravity and the grippers)
and what simple mass-spring cloths in RL benchmarks do; dihedral-angle bending would give a flat cloth a
stiffness at the cost of a four-particle stencil per hinge. Not changed.
"""
from __future__ import annotations

from typing import Any

import warp as wp

from .physics import KERNEL_CONSTANTS

wp.set_module_options({"enable_backward": True})


@wp.func
def _spring(xp: Any, vp: Any, xq: Any, vq: Any, stiffness: Any, damping: Any, rest: Any):
    d = xq - xp
    length = wp.sqrt(wp.dot(d, d) + type(stiffness)(1.0e-12))
    direction = d / length
    return direction * (stiffness * (length - rest) + damping * wp.dot(vq - vp, direction))


@wp.func
def _softplus(u: Any):
    """``log(1 + e^u)`` without overflow (``e^{-|u|}`` never exceeds 1)."""
    return wp.max(u, type(u)(0.0)) + wp.log(type(u)(1.0) + wp.exp(-wp.abs(u)))


def _params_struct(scalar):
    """The substep's constants as one ``wp.struct`` (one argument to pack per launch instead of sixteen),
    with :class:`~mbmix_warp.physics.ClothPhysics`'s field names."""
    fields = {"grid_size": int, **{name: scalar for name in KERNEL_CONSTANTS}}  # explicit: annotations are strings
    return wp.struct(type(f"ClothParams_{scalar.__name__}", (), {"__annotations__": fields, "__module__": __name__}))


PARAMS = {"float32": _params_struct(wp.float32), "float64": _params_struct(wp.float64)}
"""The constants' struct by float type; field names and units as :class:`mbmix_warp.physics.ClothPhysics`."""


@wp.kernel
def cloth_substep(
    x: wp.array2d(dtype=Any),
    v: wp.array2d(dtype=Any),
    grip_pos: wp.array2d(dtype=Any),
    grip_vel: wp.array2d(dtype=Any),
    pinned_by: wp.array(dtype=wp.int32),
    params: Any,
    elapsed: Any,
    x_out: wp.array2d(dtype=Any),
    v_out: wp.array2d(dtype=Any),
):
    env, p = wp.tid()
    side = params.grid_size
    spacing = params.spacing
    k_stretch = params.stretch_stiffness
    k_shear = params.shear_stiffness
    k_bend = params.bend_stiffness
    spring_damping = params.spring_damping
    mass = params.particle_mass
    gravity = params.gravity
    drag = params.drag
    radius = params.particle_radius
    contact_width = params.contact_width
    k_contact = params.ground_stiffness
    contact_dissipation = params.contact_dissipation
    friction = params.friction
    friction_smoothing = params.friction_smoothing
    dt = params.substep_dt
    grip = pinned_by[p]
    if grip >= 0:
        x_out[env, p] = grip_pos[env, grip] + grip_vel[env, grip] * elapsed
        v_out[env, p] = grip_vel[env, grip]
        return
    xp = x[env, p]
    vp = v[env, p]
    one = type(mass)(1.0)
    zero = type(mass)(0.0)
    row = p // side
    col = p - row * side
    diagonal = spacing * wp.sqrt(type(mass)(2.0))
    force = type(xp)(zero, zero, -gravity * mass) - vp * (drag * mass)
    # the 12-neighbour stencil: (row offset, column offset, stiffness, rest length)
    for n in range(12):
        dr = 0
        dc = 0
        k = k_stretch
        rest = spacing
        if n == 0:
            dr = 1
        elif n == 1:
            dr = -1
        elif n == 2:
            dc = 1
        elif n == 3:
            dc = -1
        elif n < 8:
            k = k_shear
            rest = diagonal
            dr = 1
            dc = 1
            if n == 5 or n == 7:
                dr = -1
            if n == 6 or n == 7:
                dc = -1
        else:
            k = k_bend
            rest = spacing * type(mass)(2.0)
            if n == 8:
                dr = 2
            elif n == 9:
                dr = -2
            elif n == 10:
                dc = 2
            else:
                dc = -2
        r = row + dr
        c = col + dc
        if r >= 0 and r < side and c >= 0 and c < side:
            q = r * side + c
            force = force + _spring(xp, vp, x[env, q], v[env, q], k, spring_damping, rest)
    # smooth penalty contact with the ground plane z = 0, and regularised Coulomb friction
    u = (radius - xp[2]) / contact_width
    penetration = contact_width * _softplus(u)
    normal = k_contact * penetration
    weight = wp.max(mass * gravity, type(mass)(1.0e-6))  # the saturation force (floored: no 0/0 without gravity)
    damping = contact_dissipation * weight * wp.tanh(normal / weight)  # Hunt–Crossley, saturating smoothly
    pushing = wp.max(normal - damping * vp[2], zero)  # never pulling
    tangential = type(xp)(vp[0], vp[1], zero)
    slip = wp.sqrt(wp.dot(tangential, tangential) + friction_smoothing * friction_smoothing)
    force = force + type(xp)(zero, zero, pushing)
    force = force - tangential * (friction * normal / slip)
    v_new = vp + force * (dt / mass)
    v_out[env, p] = v_new
    x_out[env, p] = xp + v_new * dt


def _overload(vec, scalar, name):
    arrays = {n: wp.array2d(dtype=vec) for n in ("x", "v", "grip_pos", "grip_vel", "x_out", "v_out")}
    return wp.overload(cloth_substep, {**arrays, "params": PARAMS[name], "elapsed": scalar})


SUBSTEP = {"float32": _overload(wp.vec3f, wp.float32, "float32"), "float64": _overload(wp.vec3d, wp.float64, "float64")}
"""The concrete kernels by float type: launching them skips generic type inference (most of a CPU launch)."""

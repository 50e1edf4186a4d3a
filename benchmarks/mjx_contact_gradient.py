"""Is MuJoCo MJX's reverse-mode gradient through contact usable? (The condition for a Brax ``mjx`` backend.)

The Brax plugin offers a backend only once a window's gradient through it is finite and matches finite
differences. MJX solves contact with an iterative constraint solver in a ``lax.while_loop``, which JAX cannot
differentiate in reverse mode; with ``opt.iterations = 1`` the loop is one Newton step and ``jax.grad``
traces. Whether that one step's gradient is *right* through contact is what this script checks, on the
smallest system that has contact: a free sphere on a plane, float64, two cases:

- ``resting``: the sphere starts touching the plane, at rest (the contact is active every step);
- ``hitting``: the sphere starts above the plane falling, and hits it within the window.

float64 by default (``--float32``: the Brax plugin's default dtype). For each: ``loss = final height + 0.1·final vertical velocity`` after ``--steps`` steps, its ``jax.grad``
w.r.t. the initial vertical velocity and height, against central differences (``--eps``). Prints one JSON
line per case (the analytic and numeric directional derivatives, their relative error, finiteness) and
exits 0 whatever the outcome: it reports, it does not assert (the plugin's decision is written in
``docs/envs.md``). Run: ``python benchmarks/mjx_contact_gradient.py [--iterations 1] [--steps 20]``.
"""
from __future__ import annotations

import argparse
import json
import time

SPHERE_ON_PLANE = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1"/>
    <body name="ball" pos="0 0 {height}">
      <freejoint/>
      <geom type="sphere" size="0.1" mass="1"/>
    </body>
  </worldbody>
</mujoco>
"""

# (initial height of the sphere's centre, vertical velocity); radius 0.1: "resting" starts 5 mm into the plane
# (contact active on both sides of the finite difference, not at its kink), "hitting" 4 cm above it
CASES = {"resting": (0.095, 0.0), "hitting": (0.14, -1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1, help="constraint-solver iterations (opt.iterations)")
    parser.add_argument("--ls-iterations", type=int, default=None, help="line-search iterations (default: MJX's)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps", type=float, default=1e-6)
    parser.add_argument("--float32", action="store_true",
                        help="float32 (the Brax plugin's default dtype); central differences then need --eps 1e-3")
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="default: every case")
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", not args.float32)
    import jax.numpy as jnp
    import mujoco
    from mujoco import mjx

    for case in args.case or CASES:
        height, velocity = CASES[case]
        started = time.perf_counter()
        model = mujoco.MjModel.from_xml_string(SPHERE_ON_PLANE.format(height=height))
        model.opt.iterations = args.iterations
        if args.ls_iterations is not None:
            model.opt.ls_iterations = args.ls_iterations
        mx = mjx.put_model(model)
        data = mjx.make_data(mx)

        def loss(z0, vz0):
            d = data.replace(qpos=data.qpos.at[2].set(z0), qvel=data.qvel.at[2].set(vz0))
            d = jax.lax.fori_loop(0, args.steps, lambda _, d: mjx.step(mx, d), d)
            return d.qpos[2] + 0.1 * d.qvel[2]

        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        direction = (0.3, 0.7)
        try:
            value, (grad_z, grad_v) = value_and_grad(jnp.asarray(height), jnp.asarray(velocity))
            analytic = float(direction[0] * grad_z + direction[1] * grad_v)
            error = None
        except Exception as exc:  # noqa: BLE001 - report, e.g. "Reverse-mode differentiation does not work..."
            value, analytic, error = float("nan"), float("nan"), f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        plain = jax.jit(loss)
        eps = args.eps
        numeric = float((plain(height + eps * direction[0], velocity + eps * direction[1])
                         - plain(height - eps * direction[0], velocity - eps * direction[1])) / (2 * eps))
        touching = jax.jit(lambda: jax.lax.scan(
            lambda d, _: (lambda n: (n, n._impl.contact.dist.min() <= 1e-3))(mjx.step(mx, d)), data.replace(
                qpos=data.qpos.at[2].set(height), qvel=data.qvel.at[2].set(velocity)), None, length=args.steps)[1])()
        relative = abs(analytic - numeric) / max(abs(numeric), 1e-12)
        print(json.dumps({
            "case": case, "iterations": args.iterations, "ls_iterations": int(model.opt.ls_iterations),
            "steps": args.steps, "dtype": str(jnp.asarray(height).dtype), "eps": eps, "loss": float(value), "analytic": analytic, "numeric": numeric,
            "relative_error": relative, "finite": bool(jnp.isfinite(analytic)), "error": error,
            "steps_in_contact": int(touching.sum()), "seconds": round(time.perf_counter() - started, 1),
            "mujoco": mujoco.__version__, "jax": jax.__version__}))


if __name__ == "__main__":
    main()

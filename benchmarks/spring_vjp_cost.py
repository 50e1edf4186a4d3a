"""Does a hand-written, differentiable VJP of the spring block make ``particle_gnn``'s Jacobian term cheaper?

The block is one substep's linear-spring forces as ``particle_gnn``'s integrator computes them (layout
``[2d, P, B]``, per-coupling law ``a·strain + b·closing + c``, forces scattered onto both ends). Two
implementations, same maths:

- ``autograd``: plain torch ops; autograd builds the VJP and its derivative;
- ``custom``: a ``torch.autograd.Function`` whose backward is the analytic VJP written in torch ops (so the
  Jacobian term's double backward differentiates it), recomputing the geometry from the saved inputs.

Both run the fit's pattern: forward, the VJP with ``create_graph`` (the Jacobian probe), then the gradient of
a loss of both w.r.t. the law's coefficients. First the two are checked equal in float64 (relative
difference printed), then timed in CPU time (best of ``--repeats`` blocks, interleaved). The last line is
the ratio custom / autograd (< 1: the hand-written VJP is cheaper).

Run: ``OMP_NUM_THREADS=1 python benchmarks/spring_vjp_cost.py`` (cloth-sized: 64 envs, 64 particles,
306 couplings; ~20 s).
"""
from __future__ import annotations

import argparse
import time

import torch


def make_block(particles: int, couplings: int, envs: int, dim: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    i = torch.randint(0, particles, (couplings,), generator=generator)
    j = (i + 1 + torch.randint(0, particles - 1, (couplings,), generator=generator)) % particles
    inverse_rest = 1 / (0.05 + 0.05 * torch.rand(couplings, 1, generator=generator, dtype=torch.float64))

    def geometry(z):
        offset, relative = (z.index_select(1, j) - z.index_select(1, i)).view(2, dim, couplings, envs).unbind(0)
        return offset, relative

    def springs(z, a, b, c):
        """``[dim, P, B]`` forces per unit mass from ``z = [x; v]`` ``[2·dim, P, B]`` and ``a, b, c [E, 1]``."""
        offset, relative = geometry(z)
        length = ((offset * offset).sum(0) + 1e-12).sqrt()
        inverse = length.reciprocal()
        closing = (relative * offset).sum(0) * inverse
        strain = length * inverse_rest.to(z.dtype) - 1
        force = offset * ((a * strain + b * closing + c) * inverse)
        out = torch.zeros(dim, particles, envs, dtype=z.dtype)
        return out.index_add(1, i, force).index_add(1, j, force, alpha=-1)

    class Springs(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, a, b, c):
            ctx.save_for_backward(z, a, b, c)
            with torch.no_grad():
                return springs(z, a, b, c)

        @staticmethod
        def backward(ctx, grad):
            z, a, b, c = ctx.saved_tensors
            offset, relative = geometry(z)
            squared = (offset * offset).sum(0) + 1e-12
            inverse = squared.rsqrt()
            dot = (relative * offset).sum(0)
            closing = dot * inverse
            strain = squared * inverse * inverse_rest.to(z.dtype) - 1
            scalar = a * strain + b * closing + c
            grad_force = grad.index_select(1, i) - grad.index_select(1, j)  # [d, E, B]
            projected = (grad_force * offset).sum(0)
            grad_scalar = projected * inverse
            grad_strain, grad_closing = a * grad_scalar, b * grad_scalar
            grad_a = (grad_scalar * strain).sum(1, keepdim=True)
            grad_b = (grad_scalar * closing).sum(1, keepdim=True)
            grad_c = grad_scalar.sum(1, keepdim=True)
            grad_dot = grad_closing * inverse
            grad_inverse = projected * scalar + grad_closing * dot
            grad_length = grad_strain * inverse_rest.to(z.dtype) - grad_inverse * inverse * inverse
            grad_offset = grad_force * (scalar * inverse) + offset * (grad_length * inverse) + relative * grad_dot
            grad_ends = torch.stack([grad_offset, offset * grad_dot]).view(2 * dim, couplings, envs)
            grad_z = torch.zeros_like(z).index_add(1, j, grad_ends).index_add(1, i, grad_ends, alpha=-1)
            return grad_z, grad_a, grad_b, grad_c

    return springs, Springs.apply


def fit_pattern(block, z0, coefficients, probe, weights):
    """Forward, VJP with ``create_graph``, gradient of a loss of both w.r.t. the coefficients."""
    z = z0.clone().requires_grad_(True)
    out = block(z, *coefficients)
    vjp, = torch.autograd.grad(out, z, probe, create_graph=True)
    loss = (vjp * weights[0]).pow(2).sum() + (out * weights[1]).sum()
    return torch.autograd.grad(loss, coefficients)


def inputs(particles, couplings, envs, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(6, particles, envs, generator=g, dtype=dtype) * 0.1
    coefficients = [(torch.rand(couplings, 1, generator=g, dtype=dtype) * 100).requires_grad_(True),
                    torch.randn(couplings, 1, generator=g, dtype=dtype).requires_grad_(True),
                    torch.randn(couplings, 1, generator=g, dtype=dtype).requires_grad_(True)]
    probe = torch.randn(3, particles, envs, generator=g, dtype=dtype)
    weights = (torch.randn(6, particles, envs, generator=g, dtype=dtype),
               torch.randn(3, particles, envs, generator=g, dtype=dtype))
    return z0, coefficients, probe, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--couplings", type=int, default=306)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plain, custom = make_block(args.particles, args.couplings, args.envs)
    exact = inputs(args.particles, args.couplings, args.envs, torch.float64)
    reference, ours = fit_pattern(plain, *exact), fit_pattern(custom, *exact)
    difference = max(float((r - o).abs().max() / r.abs().max()) for r, o in zip(reference, ours))
    print(f"float64, max relative difference of the coefficient gradients: {difference:.1e}")
    case = inputs(args.particles, args.couplings, args.envs, torch.float32)
    best = {"autograd": float("inf"), "custom": float("inf")}
    for _ in range(args.repeats):
        for name, block in (("autograd", plain), ("custom", custom)):
            fit_pattern(block, *case)
            started = time.process_time()
            for _ in range(args.calls):
                fit_pattern(block, *case)
            best[name] = min(best[name], (time.process_time() - started) / args.calls * 1e3)
    print(f"CPU ms per fit pattern: autograd {best['autograd']:.2f}, hand-written VJP {best['custom']:.2f}")
    print(f"custom / autograd: {best['custom'] / best['autograd']:.2f}")


if __name__ == "__main__":
    main()

"""Throughput and memory of the warp cloth step (``cloth_fold``), against a plain-torch step of the same model.

1. **Steps per second**, forward and forward+backward (one env step = ``substeps`` substeps, the gradient of
   a random linear function of the next state w.r.t. state and action), against ``num_envs``, for the warp
   bridge and for a vectorised torch implementation of exactly the same substep (the baseline; it is also
   checked to agree with the warp step). The ratio warp / torch is printed per row.
2. **Peak memory of one differentiable step against substeps**: the bytes the autograd graph *retains*
   until backward (counted exactly with ``torch.autograd.graph.saved_tensors_hooks``) and the peak memory
   *during* forward+backward above the memory in use before it (CUDA: ``torch.cuda.max_memory_allocated``;
   CPU: the resident set size sampled every 0.2 ms by a thread, in a fresh subprocess per setting). The warp bridge retains only the step's inputs whatever ``substeps`` is;
   the torch baseline retains every substep.
3. Last line: particle-substeps per second, forward+backward, at the largest ``num_envs``.

Run: ``python benchmarks/cloth_sim.py`` (CPU defaults: about a minute on 2 cores), or on a GPU
``python benchmarks/cloth_sim.py --device cuda --grid 32 --envs 256 1024 4096 --substeps 16 64 256``.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import torch

import mbmix_fw as mb
from mbmix_warp import ClothFoldConfig, make_cloth_fold
from mbmix_warp.ground import ground_force


# ---------------------------------------------------------------- the torch baseline
class TorchCloth:
    """The substep of :mod:`mbmix_warp.kernels` as batched torch ops (a 12-neighbour gather per particle)."""

    def __init__(self, env):
        c, n = env.config, env.side
        self.env, self.c = env, c
        offsets = [(1, 0, c.stretch_stiffness, 1.0), (-1, 0, c.stretch_stiffness, 1.0),
                   (0, 1, c.stretch_stiffness, 1.0), (0, -1, c.stretch_stiffness, 1.0)]
        offsets += [(dr, dc, c.shear_stiffness, math.sqrt(2)) for dr in (1, -1) for dc in (1, -1)]
        offsets += [(2, 0, c.bend_stiffness, 2.0), (-2, 0, c.bend_stiffness, 2.0),
                    (0, 2, c.bend_stiffness, 2.0), (0, -2, c.bend_stiffness, 2.0)]
        rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        rows, cols = rows.reshape(-1), cols.reshape(-1)
        index, mask = [], []
        for dr, dc, _, _ in offsets:
            r, q = rows + dr, cols + dc
            inside = (r >= 0) & (r < n) & (q >= 0) & (q < n)
            index.append(torch.where(inside, r * n + q, torch.arange(n * n)))
            mask.append(inside)
        device = env.device
        self.index = torch.stack(index).to(device)  # [12, P]
        self.mask = torch.stack(mask).to(device)
        self.k = torch.tensor([o[2] for o in offsets], device=device)
        self.rest = torch.tensor([o[3] * env.spacing for o in offsets], device=device)
        self.pinned = torch.tensor(env.held, device=device)
        self.m = c.mass / n**2
        self.h = c.dt / c.substeps

    def step(self, state, action):
        env, c = self.env, self.c
        x, v, grip = env.split(state)
        commanded = grip + c.dt * c.max_speed * action.clamp(-1, 1).reshape(grip.shape)
        grip_next = torch.cat([commanded[..., :2], commanded[..., 2:].clamp(min=c.particle_radius)], -1)
        grip_vel = (grip_next - grip) / c.dt
        k, rest, mask = self.k.to(x.dtype)[:, None], self.rest.to(x.dtype)[:, None], self.mask
        for sub in range(c.substeps):
            d = x[:, self.index] - x[:, None]  # [N, 12, P, 3]
            dv = v[:, self.index] - v[:, None]
            length = torch.sqrt((d * d).sum(-1) + 1e-12)
            unit = d / length[..., None]
            magnitude = k * (length - rest) + c.spring_damping * (dv * unit).sum(-1)
            force = (unit * (magnitude * mask)[..., None]).sum(1)
            force = force - c.drag * self.m * v
            force = force + ground_force(c, x, v)
            force[..., 2] -= c.gravity * self.m
            v = v + force * (self.h / self.m)
            x = x + v * self.h
            held = grip + grip_vel * (sub + 1) * self.h
            x = x.index_copy(1, self.pinned, held)
            v = v.index_copy(1, self.pinned, grip_vel)
        n = state.shape[0]
        return torch.cat([x.reshape(n, -1), v.reshape(n, -1), grip_next.reshape(n, -1)], 1)


# ---------------------------------------------------------------- measurements
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> float:
    fn()  # warm-up (compiles on first use)
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - started) / repeats


def throughput(args, device) -> list[dict]:
    rows = []
    for n in args.envs:
        env = make_cloth_fold(ClothFoldConfig(num_envs=n, grid_size=args.grid, substeps=args.substeps[0]),
                              mb.BuildContext(device=device))
        ref = TorchCloth(env)
        s = env.reset(n, torch.Generator(device=device).manual_seed(0))
        a = 0.5 * torch.ones(n, env.action_dim, device=device)
        torch.testing.assert_close(env.step(s, a), ref.step(s, a), rtol=1e-4, atol=1e-5)
        u = torch.randn(n, env.state_dim, device=device)
        row = {"envs": n}
        for name, step in (("warp", env.step), ("torch", ref.step)):
            with torch.no_grad():
                row[f"{name}_fwd"] = timed(lambda: step(s, a), device, args.repeats)

            def both():
                leaf_s, leaf_a = s.clone().requires_grad_(True), a.clone().requires_grad_(True)
                torch.autograd.grad((step(leaf_s, leaf_a) * u).sum(), (leaf_s, leaf_a))

            row[f"{name}_fwd_bwd"] = timed(both, device, args.repeats)
        row["particle_substeps"] = n * env.particles * args.substeps[0]
        rows.append(row)
        print(f"envs {n:6d}  steps/s fwd: warp {n / row['warp_fwd']:10.0f} torch {n / row['torch_fwd']:10.0f} "
              f"(x{row['torch_fwd'] / row['warp_fwd']:.2f})   fwd+bwd: warp {n / row['warp_fwd_bwd']:10.0f} "
              f"torch {n / row['torch_fwd_bwd']:10.0f} (x{row['torch_fwd_bwd'] / row['warp_fwd_bwd']:.2f})",
              flush=True)
    return rows


MEMORY_CHILD = r"""
import json, os, sys, threading, time, torch
import mbmix_fw as mb
from mbmix_warp import ClothFoldConfig, make_cloth_fold
sys.path.insert(0, sys.argv[5])
from cloth_sim import TorchCloth
impl, n, grid, substeps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
device = torch.device(sys.argv[6])
torch.set_num_threads(1)
env = make_cloth_fold(ClothFoldConfig(num_envs=n, grid_size=grid, substeps=substeps), mb.BuildContext(device=device))
step = env.step if impl == "warp" else TorchCloth(env).step
s = env.reset(n, torch.Generator(device=device).manual_seed(0)).requires_grad_(True)
a = torch.zeros(n, env.action_dim, device=device, requires_grad=True)
u = torch.randn(n, env.state_dim, device=device)
# warm-up on one cloth (compiles the kernels) so the high-water mark below is the measured step's
torch.autograd.grad((step(s[:1], a[:1]) * u[:1]).sum(), (s, a))
saved = 0
def pack(t):
    global saved
    saved += t.numel() * t.element_size()
    return t
def resident():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
highest, running = [resident()], [True]
def sample():  # the kernels run in C with the GIL released: this thread sees the resident set grow
    while running[0]:
        highest[0] = max(highest[0], resident())
        time.sleep(0.0002)
if device.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resident()
    watcher = threading.Thread(target=sample); watcher.start()
with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    out = step(s, a)
torch.autograd.grad((out * u).sum(), (s, a))
if device.type == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    running[0] = False; watcher.join(); peak = highest[0] - base
print(json.dumps({"retained": saved, "peak": peak}))
"""


def memory(args, device) -> list[dict]:
    rows = []
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    n = args.memory_envs
    for substeps in args.substeps:
        row = {"substeps": substeps}
        for impl in ("warp", "torch"):
            done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, impl, str(n), str(args.grid), str(substeps),
                                   here, str(device)], capture_output=True, text=True, check=True)
            row[impl] = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"substeps {substeps:4d}  retained for backward: warp {row['warp']['retained'] / 2**20:8.2f} MiB  "
              f"torch {row['torch']['retained'] / 2**20:8.2f} MiB   peak during fwd+bwd: warp "
              f"{row['warp']['peak'] / 2**20:8.1f} MiB  torch {row['torch']['peak'] / 2**20:8.1f} MiB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--substeps", type=int, nargs="+", default=[8, 32, 128],
                        help="the first is used for throughput; all for memory")
    parser.add_argument("--memory-envs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # warp's CPU kernels are single-threaded: compare like with like
    print(f"cloth {args.grid}x{args.grid}, device {device}, substeps {args.substeps[0]} (throughput)")
    rows = throughput(args, device)
    mem = memory(args, device)
    last = rows[-1]
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"throughput": rows, "memory": mem, "args": vars(args)}, handle, indent=2)
    print(f"particle-substeps/s forward+backward at {last['envs']} envs: warp "
          f"{last['particle_substeps'] / last['warp_fwd_bwd']:.3g}  torch {last['particle_substeps'] / last['torch_fwd_bwd']:.3g}")


if __name__ == "__main__":
    main()

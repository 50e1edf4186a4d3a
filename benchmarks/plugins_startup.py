"""How fast is ``mbmix-fw plugins --json``? (issue: core — "answers in well under 2 s")

Listing plugins loads every installed plugin's registration code. Because registration imports no torch
(config models only; classes load through ``mb.lazy_factory``), the command should cost a fraction of a
bare ``import torch``. Both are timed here as whole fresh processes, alternately, ``--repeats`` times
each; the script prints the medians and their ratio, and fails if the listing imported torch.

Run: ``python benchmarks/plugins_startup.py [--repeats 7]``.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

LIST = [sys.executable, "-c",
        "import sys; from mbmix_fw.commands.cli import main; rc = main(['plugins', '--json']); "
        "sys.stderr.write('TORCH' if 'torch' in sys.modules else ''); sys.exit(rc)"]
TORCH = [sys.executable, "-c", "import torch"]


def wall(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    listing, torch_import = [], []
    for _ in range(args.repeats):
        seconds, stderr = wall(LIST)
        if "TORCH" in stderr:
            sys.exit("mbmix-fw plugins imported torch")
        listing.append(seconds)
        torch_import.append(wall(TORCH)[0])
    plugins, torch_only = statistics.median(listing), statistics.median(torch_import)
    print(f"mbmix-fw plugins --json (whole process): median {plugins:.3f} s over {args.repeats} runs")
    print(f"python -c 'import torch'  (whole process): median {torch_only:.3f} s")
    print(f"ratio plugins / import torch: {plugins / torch_only:.2f}")


if __name__ == "__main__":
    main()

"""``benchmarks/gpu_suite.py --dry-run``: the GPU suite's whole path at tiny sizes on the CPU (CI)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_dry_run_writes_one_json_and_one_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")]), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out",
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert results["dry_run"] and results["machine"]["commit"] and results["machine"]["torch"]
    steps = results["steps"]
    failed = {name: step["tail"][-800:] for name, step in steps.items() if step["status"] not in ("ok",)
              and not step["status"].startswith("skipped")}
    assert not failed, failed
    assert steps["cuda_tests"]["counts"].get("skipped", 0) >= 4 and "failed" not in steps["cuda_tests"]["counts"]
    assert steps["cloth_4x4_2"]["result"]["particle_substeps_per_s"] > 0
    assert set(steps["gpu_loop"]["result"]["shac_over_bare"]) == {"8"}
    assert steps["mbmix_vs_shac"]["result"]["ratio_mbmix_over_shac"] > 0
    table = (tmp_path / "gpu_suite.md").read_text()
    assert "| cloth_4x4_2 | ok |" in table and "| mbmix_vs_shac | ok |" in table

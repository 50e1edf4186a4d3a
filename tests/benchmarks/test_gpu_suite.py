"""``benchmarks/gpu_suite.py --dry-run``: the GPU suite's whole path at tiny sizes on the CPU (CI), the H_max
learning studies included (a pendulum stand-in at H = 2 and 4; part 7, the Newton ant at toy size, when it is installed;
and every full-size run's settings validated), so a broken path fails here rather than on a lent GPU."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
    assert "| learning_hmax | ok |" in table

    study = steps["learning_hmax"]
    assert study["result"]["runs_finished"] == study["result"]["runs_planned"] > 0, study["runs"]
    for method in ("shac", "mbmix"):
        cells = study["summary"]["toy"][method]
        assert set(cells) == {"2", "4"}
        assert all(math.isfinite(c["iqm"]) and c["low"] <= c["iqm"] <= c["high"] and c["seeds"] == 1
                   for c in cells.values())
    assert all(r["env_steps"] == 16 for r in study["runs"] if r["backend"] == "toy")  # equal env steps per H_max
    assert "brax" in study["skipped_backends"]
    assert "newton" not in study["summary"]  # the Newton ant's sweep is part 7, below
    assert "| H_max | shac | mbmix |" in table and "| 4 |" in table and "| worst |" in table

    newton = steps["newton_hmax"]
    if importlib.util.find_spec("newton") and importlib.util.find_spec("warp"):
        assert newton["status"] == "ok", newton
        assert newton["result"]["runs_finished"] == newton["result"]["runs_planned"] == 2, newton["runs"]
        assert set(newton["summary"]["newton"]) == {"shac", "mbmix"}
        assert "| newton_hmax | ok |" in table and "Newton ant, 2 envs" in table
    else:
        assert newton["skipped_backends"]["newton"].startswith("skipped (not importable")


def test_the_full_study_plans_the_seed_sweep_at_equal_env_steps():
    """The real run's plan: H_max ∈ {16, 32, 48, 64, 96}, SHAC and MB-MIX on both ants, seed-major, and an
    env-step budget that every H_max spends in whole iterations."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    for full, recipe in ((gpu_suite.LEARNING["full"], "recipes/ant_shac.toml"),
                         (gpu_suite.NEWTON_HMAX["full"], "recipes/ant_newton_shac.toml")):
        assert full["horizons"] == [16, 32, 48, 64, 96]
        assert all(full["unit"] % h == 0 for h in full["horizons"])
        assert {b["recipes"]["shac"] for b in full["backends"].values()} == {recipe}
        planned, _ = gpu_suite.learning_jobs({**full, "backends": {k: {**b, "needs": ()}
                                                                  for k, b in full["backends"].items()}}, "full")
        assert len(planned) == full["seeds"] * 2 * 5
        budgets = {x for job in planned for x in job["sets"] if x.startswith("run.env_steps=")}
        assert len(budgets) == 1  # one env-step budget for every H_max and method
        assert [job["seed"] for job in planned] == sorted(job["seed"] for job in planned)  # seed-major
    assert gpu_suite.NEWTON_HMAX["full"]["backends"]["newton"]["envs"] == 256  # the Newton recipes' GPU size

"""The README's promises: its Python example runs, and .ci/run runs exactly its test command."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(b.strip() for b in code_blocks("bash") if "pytest" in b)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_programmatic_composition_example_runs(tmp_path):
    (example,) = code_blocks("python")
    script = tmp_path / "readme_example.py"
    script.write_text(example)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    initial, arrow, final = done.stdout.split()
    assert arrow == "->" and math.isfinite(float(initial)) and math.isfinite(float(final))

"""``mbmix_brax.jax_setup``: the GPU memory settings JAX reads at initialisation, and the warning when they
come too late. Each case runs in a fresh process (the settings are process-wide, read once)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

REPORT = (
    "import json, os, warnings\n"
    "with warnings.catch_warnings(record=True) as caught:\n"
    "    warnings.simplefilter('always')\n"
    "    {before}\n"
    "    from mbmix_brax.jax_setup import configure_jax\n"
    "    configure_jax()\n"
    "print(json.dumps({{'env': {{k: os.environ.get(k) for k in ('XLA_PYTHON_CLIENT_PREALLOCATE',\n"
    "    'XLA_PYTHON_CLIENT_MEM_FRACTION', 'XLA_CLIENT_MEM_FRACTION')}},\n"
    "    'warnings': [str(w.message) for w in caught if 'mbmix_brax' in str(w.message)]}}))\n"
)


def run(before: str = "pass", **environ: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLA_")}
    env.update(environ, MBMIX_FW_JAX_CACHE="off")
    done = subprocess.run([sys.executable, "-c", REPORT.format(before=before)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_memory_settings_are_set_before_jax_starts_and_nothing_is_said():
    result = run()
    assert result["env"] == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5",
                             "XLA_CLIENT_MEM_FRACTION": None}
    assert result["warnings"] == []


def test_the_user_s_settings_win_and_the_new_name_is_not_doubled():
    # jaxlib refuses XLA_CLIENT_MEM_FRACTION and XLA_PYTHON_CLIENT_MEM_FRACTION set together
    result = run(XLA_CLIENT_MEM_FRACTION="0.3", XLA_PYTHON_CLIENT_PREALLOCATE="true")
    assert result["env"] == {"XLA_PYTHON_CLIENT_PREALLOCATE": "true", "XLA_PYTHON_CLIENT_MEM_FRACTION": None,
                             "XLA_CLIENT_MEM_FRACTION": "0.3"}
    assert run(XLA_PYTHON_CLIENT_MEM_FRACTION="0.9")["env"]["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.9"


def test_jax_initialised_before_the_plugin_gives_one_warning():
    result = run(before="import jax; jax.numpy.zeros(1).block_until_ready()")
    assert len(result["warnings"]) == 1
    assert "initialised before" in result["warnings"][0]
    # importing jax alone does not initialise it: the settings still apply, nothing to warn about
    assert run(before="import jax")["warnings"] == []

"""Guards for the architecture: import direction, public API only, lazy plugins, packaging, documented hooks."""
from __future__ import annotations

import ast
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import mbmix_fw
from mbmix_fw.contracts import hookspecs

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
ENTRY_POINTS: dict[str, str] = PYPROJECT["project"]["entry-points"]["mbmix_fw"]
PLUGIN_DIRS = sorted(p for p in (REPO / "plugins").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
PLUGIN_PACKAGES = {p.name for p in PLUGIN_DIRS} | set(ENTRY_POINTS.values())
HEAVY = {"jax", "jaxlib", "brax", "warp", "ray"}
CORE_MODULES_PLUGINS_MAY_IMPORT = {"mbmix_fw", "mbmix_fw.testing"}


def imports_of(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` of every absolute import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_there_are_builtin_plugins_to_check():
    assert len(PLUGIN_DIRS) >= 4 and PLUGIN_PACKAGES >= {"mbmix_schedulers", "mbmix_toy"}


@pytest.mark.parametrize("path", python_files(REPO / "mbmix_fw"), ids=lambda p: p.name)
def test_core_never_imports_a_plugin(path):
    bad = [(line, module) for line, module, _ in imports_of(path)
           if module.split(".")[0] in PLUGIN_PACKAGES | {"plugins"}]
    assert not bad, f"{path.relative_to(REPO)} imports plugin packages: {bad}"


PLUGIN_AND_EXAMPLE_FILES = python_files(REPO / "plugins") + python_files(REPO / "examples")


@pytest.mark.parametrize("path", PLUGIN_AND_EXAMPLE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_plugins_use_only_the_public_api(path):
    """Plugins import ``mbmix_fw`` (names in ``__all__``) and ``mbmix_fw.testing``, never private modules."""
    public = set(mbmix_fw.__all__) | {"__version__"}
    problems = []
    aliases = set()
    for line, module, names in imports_of(path):
        root = module.split(".")[0]
        if root == "plugins":
            problems.append(f"line {line}: import {module} (import the package by its own name)")
        if root != "mbmix_fw":
            continue
        if module not in CORE_MODULES_PLUGINS_MAY_IMPORT:
            problems.append(f"line {line}: {module} is private; use 'import mbmix_fw as mb'")
        elif module == "mbmix_fw" and names:
            problems += [f"line {line}: mbmix_fw.{n} is not public" for n in names if n not in public]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "mbmix_fw"}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr not in public and node.attr != "testing"):
            problems.append(f"line {node.lineno}: {node.value.id}.{node.attr} is not in mbmix_fw.__all__")
    assert not problems, f"{path.relative_to(REPO)}:\n" + "\n".join(problems)


def test_public_api_names_exist():
    missing = [name for name in mbmix_fw.__all__ if not hasattr(mbmix_fw, name)]
    assert not missing


def test_every_plugin_folder_is_packaged_and_registered():
    packages = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    for folder in PLUGIN_DIRS:
        assert f"plugins/{folder.name}" in packages, f"plugins/{folder.name} missing from hatch packages"
        assert folder.name in ENTRY_POINTS.values(), f"{folder.name} missing from [project.entry-points.mbmix_fw]"
        assert (folder / "__init__.py").is_file(), f"plugins/{folder.name} is not a package"
    for module in ENTRY_POINTS.values():
        assert (REPO / "plugins" / module).is_dir(), f"entry point {module} has no plugins/{module} folder"


def test_builtin_plugins_and_plugin_listing_import_no_heavy_package():
    """Importing every built-in plugin, and ``mbmix-fw plugins --json``, leave jax/brax/warp unimported."""
    code = textwrap.dedent(f"""
        import importlib, io, contextlib, json, sys
        failed = {{}}
        for module in {sorted(ENTRY_POINTS.values())!r}:
            try:
                importlib.import_module(module)
            except Exception as exc:
                failed[module] = repr(exc)
        from mbmix_fw.commands.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            rc = main(["plugins", "--json"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(HEAVY)!r})
        print(json.dumps({{"failed": failed, "rc": rc, "heavy": heavy, "rows": json.loads(out.getvalue())}}))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MBMIX_FW_PLUGINS": ",".join(ENTRY_POINTS)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {} and result["rc"] == 0 and result["heavy"] == []
    broken = [row for row in result["rows"] if row["status"] != "ok"]
    assert not broken, broken


def test_every_hook_is_documented_in_contributing():
    text = (REPO / "CONTRIBUTING.md").read_text()
    hooks = [name for name, f in vars(hookspecs).items() if hasattr(f, "mbmix_fw_spec")]
    assert {"register_envs", "register_estimators", "on_run_end"} <= set(hooks)
    for name in hooks:
        signature = f"{name}({', '.join(inspect.signature(getattr(hookspecs, name)).parameters)})"
        assert signature in text, f"CONTRIBUTING.md does not document {signature}"


def test_contributing_example_is_the_shipped_example_package():
    """The "write a plugin in 5 minutes" section shows the example plugin verbatim."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    example = REPO / "examples" / "mbmix-example-plugin"
    for name in ("mbmix_example_plugin.py", "pyproject.toml"):
        assert (example / name).read_text().strip() in text, f"{name} differs from CONTRIBUTING.md"
    assert re.search(r"mbmix-example-plugin = \"mbmix_example_plugin\"", text)
    estimator = REPO / "examples" / "mbmix-example-estimator" / "mbmix_example_estimator.py"
    assert estimator.read_text().strip() in text, "mbmix_example_estimator.py differs from CONTRIBUTING.md"
    bridge = REPO / "examples" / "mbmix-example-bridge" / "numpy_spring.py"
    assert bridge.read_text().strip() in text, "numpy_spring.py differs from CONTRIBUTING.md (section 11)"

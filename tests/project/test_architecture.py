"""Guards for the architecture: import direction, public API only, lazy plugins, packaging. (The docs' own
guards, the hook reference included, are in test_docs.py.)"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import re
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import mbmix_fw

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
ENTRY_POINTS: dict[str, str] = PYPROJECT["project"]["entry-points"]["mbmix_fw"]
PLUGIN_DIRS = sorted(p for p in (REPO / "plugins").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
PLUGIN_PACKAGES = {p.name for p in PLUGIN_DIRS} | set(ENTRY_POINTS.values())
HEAVY = {"jax", "jaxlib", "brax", "warp", "newton", "ray"}
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


# ---- the layers of the core (CONTRIBUTING, "Map of the code"): every import, wherever it is written ----
CORE = REPO / "mbmix_fw"
LAYERS = ("contracts", "maths", "training", "building", "diagnostics", "distributed", "commands")
"""Bottom to top: a core module imports only its own layer and the layers below it."""
BOTTOM = {"mbmix_fw.errors", "mbmix_fw.lazy"}
"""Below every layer: anything may import them, they import no other core module."""
TESTING_MAY_IMPORT = {"contracts", "maths", "training", "building", "bottom", "testing"}
"""``mbmix_fw.testing`` sits above training and building (``tiny_trainer`` builds a trainer the way a recipe
does) and below nothing: no core module imports it."""
FACADE = {"mbmix_fw", "mbmix_fw.__main__"}
"""The public API (lazy re-exports of every layer) and ``python -m mbmix_fw``: above everything, and
imported by no core module."""


def module_files(root: Path) -> dict[str, Path]:
    """``{"mbmix_fw.building.recipe": path, "mbmix_fw.building": path/__init__.py, …}`` under ``root``."""
    found = {}
    for path in python_files(root):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_modules(module: str, path: Path, known: dict[str, Path]) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, names)`` of every import in ``path`` — module level, inside functions and
    under ``if TYPE_CHECKING:`` alike, relative ones resolved. ``from pkg import sub`` counts as importing
    ``pkg.sub`` when that is a module, so importing a submodule through its package is seen."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            found += [(node.lineno, sub, []) for sub in submodules]
            if len(submodules) < len(names):
                found.append((node.lineno, target, [n for n in names if f"{target}.{n}" not in known]))
    return found


def layer_of(module: str) -> str:
    if module in BOTTOM:
        return "bottom"
    if module in FACADE:
        return "facade"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return parts[1] if len(parts) > 1 else "facade"  # mbmix_fw.testing -> "testing"


def may_import(importer: str, imported: str) -> bool:
    a, b = layer_of(importer), layer_of(imported)
    if b == "facade":
        return a == "facade"
    if a == "facade":
        return True
    if a == "testing":
        return b in TESTING_MAY_IMPORT
    if a == "bottom":
        return b == "bottom"
    if b == "testing":
        return False
    return b == "bottom" or LAYERS.index(b) <= LAYERS.index(a)


def core_graph(root: Path) -> dict[str, list[tuple[int, str, list[str]]]]:
    """Every core module's imports of other core modules."""
    known = module_files(root)
    top = root.name
    return {module: [(line, target, names) for line, target, names in imported_modules(module, path, known)
                     if target.split(".")[0] == top and target != module]
            for module, path in known.items()}


def layer_violations(root: Path) -> list[str]:
    return [f"{module} line {line} imports {target} ({layer_of(module)} may not import {layer_of(target)})"
            for module, imports in core_graph(root).items() for line, target, _ in imports
            if not may_import(module, target)]


def distributed_importers(root: Path) -> list[str]:
    """Core modules outside ``distributed/`` and ``commands/`` that import ``distributed/``."""
    return [f"{module} line {line} imports {target}"
            for module, imports in core_graph(root).items() for line, target, _ in imports
            if layer_of(target) == "distributed" and layer_of(module) not in ("distributed", "commands", "facade")]


def private_imports(paths: dict[str, Path], known: dict[str, Path]) -> list[str]:
    """``from other_module import _name`` (or of a ``_private`` module) between two different modules."""
    problems = []
    for module, path in paths.items():
        for line, target, names in imported_modules(module, path, known):
            if target == module:
                continue
            private_module = any(part.startswith("_") and not part.startswith("__") for part in target.split("."))
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_module or private_names:
                problems.append(f"{module} line {line}: from {target} import {', '.join(names) or '(module)'}")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected components of more than one module in the core's import graph (the facade
    ``mbmix_fw/__init__.py`` left out: it re-exports everything lazily, and nothing imports it)."""
    graph = {m: sorted({t for _, t, _ in imports if t not in FACADE})
             for m, imports in core_graph(root).items() if m not in FACADE}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


MAX_CORE_MODULE_LINES = 450
"""A core module longer than this holds more than one job: split it along its seams (one job per module)."""


def test_no_core_module_is_longer_than_450_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in module_files(CORE).items()}
    assert {name: n for name, n in lengths.items() if n > MAX_CORE_MODULE_LINES} == {}


def test_every_core_module_is_in_a_layer():
    unplaced = [m for m in module_files(CORE) if layer_of(m) not in {*LAYERS, "bottom", "facade", "testing"}]
    assert not unplaced, f"add these to a layer folder (or to BOTTOM): {unplaced}"


def test_core_modules_import_only_their_layer_and_the_layers_below():
    problems = layer_violations(CORE)
    assert not problems, "\n".join(problems)


def test_only_distributed_and_commands_import_distributed():
    problems = distributed_importers(CORE)
    assert not problems, "\n".join(problems)


def test_core_and_plugins_import_no_private_name_of_another_module():
    """Decided: core and plugin modules never import another module's ``_private`` names (what one module
    needs from another is public there, or it is the wrong module). Tests may: they test internals."""
    known = module_files(CORE) | {m: p for d in PLUGIN_DIRS for m, p in module_files(d).items()}
    problems = private_imports(known, known)
    assert not problems, "\n".join(problems)


def test_no_import_cycles_between_core_modules():
    cycles = import_cycles(CORE)
    assert not cycles, f"import cycles: {cycles}"


def test_the_layer_rules_catch_violations(tmp_path):
    """Each rule above fails on a copy of the core with one bad import added for that rule."""
    import shutil

    copies = iter(range(100))

    def fresh() -> Path:
        copy = tmp_path / str(next(copies)) / "mbmix_fw"
        shutil.copytree(CORE, copy, ignore=shutil.ignore_patterns("__pycache__"))
        assert not layer_violations(copy) and not distributed_importers(copy) and not import_cycles(copy)
        return copy

    def add(copy: Path, relative: str, code: str) -> int:
        """Append ``code`` to a module; returns the line number of its last line."""
        path = copy / relative
        path.write_text(path.read_text() + "\n" + code + "\n")
        return len(path.read_text().splitlines())

    copy = fresh()
    line = add(copy, "contracts/env.py", "def _added():\n    from ..maths import rollouts")  # inside a function
    assert layer_violations(copy) == [
        f"mbmix_fw.contracts.env line {line} imports mbmix_fw.maths.rollouts (contracts may not import maths)"]

    copy = fresh()
    add(copy, "maths/nets.py", "if TYPE_CHECKING:\n    from ..training.trainer import Trainer")
    assert [p.split(" line ")[0] for p in layer_violations(copy)] == ["mbmix_fw.maths.nets"]

    copy = fresh()
    add(copy, "testing.py", "from .distributed import grid")
    assert [p.split(" line ")[0] for p in layer_violations(copy)] == ["mbmix_fw.testing"]

    copy = fresh()
    add(copy, "building/recipe.py", "from ..distributed.grid import SweepPlan")
    assert [p.split(" line ")[0] for p in distributed_importers(copy)] == ["mbmix_fw.building.recipe"]

    copy = fresh()
    add(copy, "maths/probes.py", "def _added():\n    from .nets import mlp")
    assert import_cycles(copy) == []  # probes → nets alone is fine (same layer)
    add(copy, "maths/nets.py", "def _added():\n    from .probes import collect_transitions")
    assert import_cycles(copy) == [["mbmix_fw.maths.nets", "mbmix_fw.maths.probes"]]

    copy = fresh()
    line = add(copy, "building/build.py", "from ..training.trainer import _nonfinite_entries")
    known = module_files(copy)
    assert private_imports(known, known) == [
        f"mbmix_fw.building.build line {line}: from mbmix_fw.training.trainer import _nonfinite_entries"]


LAB_NOTE = re.compile(r"\b[Ii]ssues? #?\d+\b|\bat `?[0-9a-f]{7,40}`?\b")
"""An issue number or a commit hash: lab notes, which belong in commit messages and benchmarks/RESULTS.md."""


@pytest.mark.parametrize("path", [*python_files(CORE), *[p for d in PLUGIN_DIRS for p in python_files(d)]],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_code_carries_no_lab_notes(path):
    """Docstrings and comments say why, not which issue or commit measured it: a reader of the code has
    neither the tracker nor the history at hand, and the numbers live in benchmarks/RESULTS.md."""
    hits = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
            if LAB_NOTE.search(line)]
    assert hits == []

"""The README's promises and its guides': .ci/run runs exactly the README's test command, the Python guide's
example runs, and the CLI guide lists every command with its options."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PYTHON_GUIDE = (ROOT / "docs" / "python.md").read_text()
CLI_GUIDE = (ROOT / "docs" / "cli.md").read_text()


def code_blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(b.strip() for b in code_blocks("bash") if "pytest" in b)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_programmatic_composition_example_runs(tmp_path):
    (example,) = code_blocks("python", PYTHON_GUIDE)
    script = tmp_path / "readme_example.py"
    script.write_text(example)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    initial, arrow, final = done.stdout.split()
    assert arrow == "->" and math.isfinite(float(initial)) and math.isfinite(float(final))


def _commands(parser, prefix=()):
    """``(("run",), parser), (("diagnose", "variance"), parser), …`` for every (sub)command of the CLI."""
    import argparse

    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield prefix, parser
        return
    for name, sub in subparsers[0].choices.items():
        yield from _commands(sub, (*prefix, name))


def _readme_cli_lines() -> dict[str, str]:
    """The README's CLI block: command path → its synopsis (continuation lines joined)."""
    block = re.search(r"## CLI\n\n```\n(.*?)```", CLI_GUIDE, flags=re.S).group(1)
    synopses: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        if line.startswith("mbmix-fw "):
            words = line.split()[1:]
            path = []
            for word in words:  # the command path: the leading lowercase words (then RECIPE, [--opt], …)
                if not re.fullmatch(r"[a-z][a-z-]*", word):
                    break
                path.append(word)
            current = " ".join(path)
            synopses[current] = line.split("#")[0]
        elif line.startswith(" ") and current is not None:
            synopses[current] += " " + line.split("#")[0].strip()
    return synopses


def test_readme_cli_block_shows_every_command_and_option():
    from mbmix_fw.commands.cli import _parser

    synopses = _readme_cli_lines()
    for path, parser in _commands(_parser()):
        name = " ".join(path)
        assert name in synopses, f"the CLI guide has no line for 'mbmix-fw {name}'"
        for action in parser._actions:
            if action.dest in ("help", "verbose_errors"):  # -h and -v are on every command (said below it)
                continue
            shown = max(action.option_strings, key=len) if action.option_strings else action.metavar
            assert shown in synopses[name], f"the CLI guide's line for 'mbmix-fw {name}' does not show {shown}"

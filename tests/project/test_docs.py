"""The docs stay honest without pasting whole files: every example is linked from the guide that teaches it,
every code block labelled ``# from PATH`` is a verbatim excerpt of PATH, every hook is in the hook reference,
and every relative link (and its #anchor) resolves.

The excerpt convention (ours): a fenced code block whose first line is ``# from PATH`` (PATH relative to the
repository root) shows lines of that file exactly as they are; a line ``# ...`` marks lines left out, so each
run of lines between such markers must appear in the file, whole lines, in the order shown."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from mbmix_fw.contracts import hookspecs

REPO = Path(__file__).resolve().parents[2]
GUIDES = REPO / "docs" / "extending"
HOOK_REFERENCE = GUIDES / "hooks.md"
EXAMPLE_GUIDES = {  # each example package and the guide that teaches it
    "mbmix-example-plugin": GUIDES / "env.md",
    "mbmix-example-estimator": GUIDES / "estimator.md",
    "mbmix-example-scheduler": GUIDES / "scheduler.md",
    "mbmix-example-bridge": GUIDES / "bridge.md",
}
PAGES = sorted([REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").rglob("*.md"),
                *(REPO / "examples").glob("*/README.md")])
FENCE = re.compile(r"^( *)```([\w-]*)\n(.*?)^\1```", flags=re.S | re.M)
LABEL = re.compile(r"(?:#|//) from (\S+)")
ELISION = "# ..."
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NOT_PACKAGED = {"__pycache__", "build", "dist", ".pytest_cache"}


def code_blocks(text: str) -> list[tuple[str, list[str]]]:
    """``(language, lines)`` of every fenced block, its fence's indentation removed from each line."""
    blocks = []
    for indent, language, body in FENCE.findall(text):
        blocks.append((language, [line[len(indent):] if line.startswith(indent) else line
                                  for line in body.splitlines()]))
    return blocks


def excerpt_problem(lines: list[str]) -> str | None:
    """Why a labelled block is not a verbatim excerpt of its file, or ``None`` when it is."""
    path = REPO / LABEL.fullmatch(lines[0].strip()).group(1)
    if not path.is_file():
        return f"{lines[0].strip()}: no such file"
    source = "\n" + path.read_text(encoding="utf-8") + "\n"
    chunks, current = [], []
    for line in [*lines[1:], ELISION]:
        if line.strip() == ELISION:
            if current:
                chunks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if not chunks:
        return f"{lines[0].strip()}: shows no line of it"
    at = 0
    for chunk in chunks:
        found = source.find("\n" + chunk + "\n", at)
        if found < 0:
            shown = chunk if chunk in source else "(not in the file at all)"
            return f"{lines[0].strip()}: these lines are not in the file, whole and in this order:\n{chunk}\n{shown}"
        at = found + len(chunk) + 1
    return None


def labelled_blocks():
    for page in PAGES:
        for language, lines in code_blocks(page.read_text(encoding="utf-8")):
            if lines and LABEL.fullmatch(lines[0].strip()):
                yield pytest.param(page, lines, id=f"{page.relative_to(REPO)}:{lines[0].split()[-1]}")


def headings_slugs(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings (outside code blocks)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    titles = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


def links(page: Path) -> list[str]:
    """Relative link targets of a page, code blocks left out."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def resolved(page: Path, target: str) -> tuple[Path, str]:
    path, _, anchor = target.partition("#")
    return ((page.parent / path).resolve() if path else page), anchor


# ---- tests ----

def test_the_excerpt_check_catches_a_changed_line_and_a_wrong_order():
    label = "# from examples/mbmix-example-plugin/mbmix_example_plugin.py"
    good = [label, "@mb.hookimpl", "def register_envs(register):"]
    assert excerpt_problem(good) is None
    assert excerpt_problem([label, "@mb.hookimpl", "def register_envs(registry):"])
    assert excerpt_problem([label, "def register_envs(register):", ELISION, "import mbmix_fw as mb"])
    assert excerpt_problem([label, "@mb.hookimp"])  # part of a line is not a line
    assert excerpt_problem(["# from examples/no_such_file.py", "x"])


@pytest.mark.parametrize("page, lines", list(labelled_blocks()))
def test_labelled_code_blocks_are_verbatim_excerpts(page, lines):
    problem = excerpt_problem(lines)
    assert problem is None, f"{page.relative_to(REPO)}: {problem}"


def test_every_python_block_of_the_extending_guides_says_which_file_it_comes_from():
    for page in sorted(GUIDES.glob("*.md")):
        for language, lines in code_blocks(page.read_text(encoding="utf-8")):
            if language == "python":
                assert lines and LABEL.fullmatch(lines[0].strip()), (
                    f"{page.relative_to(REPO)}: a python block without '# from PATH': {lines[:2]}")


def test_every_example_file_is_linked_from_the_guide_that_teaches_it():
    examples = {p.name for p in (REPO / "examples").iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert examples == set(EXAMPLE_GUIDES), "an example package without a guide (or a guide without its example)"
    for example, guide in EXAMPLE_GUIDES.items():
        linked = {resolved(guide, target)[0] for target in links(guide)}
        files = [p for p in (REPO / "examples" / example).rglob("*") if p.is_file()
                 and not any(part in NOT_PACKAGED or part.endswith(".egg-info") or part.startswith(".")
                             for part in p.relative_to(REPO / "examples").parts)]
        assert files
        for path in files:
            assert path.resolve() in linked, f"{guide.relative_to(REPO)} does not link {path.relative_to(REPO)}"


def test_third_party_examples_name_their_entry_point_after_their_distribution():
    for example in EXAMPLE_GUIDES:
        pyproject = REPO / "examples" / example / "pyproject.toml"
        if pyproject.exists():
            module = example.replace("-", "_")
            assert f'{example} = "{module}"' in pyproject.read_text(encoding="utf-8"), pyproject


def test_every_hook_is_documented_in_the_hook_reference():
    text = HOOK_REFERENCE.read_text(encoding="utf-8")
    hooks = [name for name, f in vars(hookspecs).items() if hasattr(f, "mbmix_fw_spec")]
    assert {"register_envs", "register_world_models", "register_estimators", "on_run_end"} <= set(hooks)
    for name in hooks:
        signature = f"{name}({', '.join(inspect.signature(getattr(hookspecs, name)).parameters)})"
        assert signature in text, f"{HOOK_REFERENCE.relative_to(REPO)} does not document {signature}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    for target in links(page):
        path, anchor = resolved(page, target)
        assert path.exists(), f"{page.relative_to(REPO)}: link {target} leads nowhere"
        if anchor and path.suffix == ".md":
            assert anchor in headings_slugs(path), f"{page.relative_to(REPO)}: link {target}: no such heading"


def test_nothing_refers_to_contributing_by_section_number():
    """Sections are named, not numbered: a number goes stale when a section moves, a title fails loudly
    here (a link's anchor) or reads wrong to whoever searches for it."""
    stale = re.compile(r"CONTRIBUTING(?:\.md)?\W{0,3}(?:§|section)\s*\d", flags=re.I)
    folders = ["mbmix_fw", "plugins", "tests", "docs", "examples", "benchmarks", "recipes"]
    files = [REPO / "README.md", REPO / "CONTRIBUTING.md"]
    files += [p for f in folders for p in (REPO / f).rglob("*") if p.suffix in {".py", ".md", ".toml"}]
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in files
             for m in stale.finditer(p.read_text(encoding="utf-8")) if p != Path(__file__)]
    assert not found, found

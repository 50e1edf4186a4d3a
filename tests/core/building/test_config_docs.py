"""``mbmix-fw plugins --verbose``: every field of every built-in table, with type, allowed values, default
and its whole description; and every such field has a description."""
from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, PositiveInt

import mbmix_fw as mb
from mbmix_fw.commands.cli import main
from mbmix_fw.building.config_docs import CORE_TABLES, describe_model, type_text, undocumented_fields


def builtin_tables():
    """(table, kind, config model) of the core tables and of every plugin shipped in mbmix-fw itself."""
    registry = mb.load_registry(allow=None, disable=(), strict=False)
    tables = [(name, None, model) for name, model in CORE_TABLES.items()]
    for slot in registry.slots:
        for entry in slot.entries():
            if entry.plugin.distribution == "mbmix-fw":
                tables.append((slot.name, entry.kind, entry.config))
    return tables


BUILTIN = builtin_tables()


def test_the_builtin_tables_are_all_found():
    kinds = {(table, kind) for table, kind, _ in BUILTIN}
    assert {("run", None), ("optim", None), ("env", "pendulum"), ("estimator", "mix"),
            ("world_model", "sobolev_mlp"), ("scheduler", "dyna")} <= kinds


@pytest.mark.parametrize("table,kind,model", BUILTIN, ids=[f"{t}.{k or ''}" for t, k, _ in BUILTIN])
def test_every_field_of_every_builtin_table_has_a_description(table, kind, model):
    assert undocumented_fields(model) == [], (
        f"[{table}] {kind or ''}: add an attribute docstring under each of these fields of {model.__name__}")


class Example(BaseModel):
    model_config = {"use_attribute_docstrings": True}

    width: int = Field(3, ge=1, le=8)
    """Short."""
    rate: float = Field(0.5, gt=0.0, lt=1.0)
    """A description that runs on
    over two lines and ends here."""
    mode: Literal["score", "straight_through"] = "score"
    """Mode."""
    sizes: list[PositiveInt] = Field(default_factory=lambda: [64, 64])
    """Sizes."""
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], float] = (0.7, 0.95)
    """Betas."""
    name: str
    """Required."""
    plain: bool = False


def test_fields_show_type_range_allowed_values_default_and_the_whole_description():
    lines = describe_model(Example, indent="")
    assert lines == [
        "width: int in [1, 8] = 3", "    Short.",
        "rate: float in (0.0, 1.0) = 0.5", "    A description that runs on", "    over two lines and ends here.",
        'mode: "score" | "straight_through" = "score"', "    Mode.",
        "sizes: list[int > 0] = [64, 64]", "    Sizes.",
        "betas: tuple[float in [0.0, 1.0), float] = [0.7, 0.95]", "    Betas.",
        "name: str (required)", "    Required.",
        "plain: bool = false", "    (no description)",
    ]
    assert undocumented_fields(Example) == ["plain"]
    assert type_text(int, [Field(ge=2).metadata[0]]) == "int ≥ 2"


def test_plugins_verbose_shows_the_core_tables_and_whole_multiline_docs(capsys):
    assert main(["plugins", "--verbose"]) == 0
    out = capsys.readouterr().out
    for table in ("[run]", "[policy]", "[critic]", "[optim]"):
        assert f"\n  {table}\n" in out
    assert "      iterations: int in [1, 1000000000] = 100\n          Policy updates" in out
    assert '      device: "auto" | "cpu" | "cuda" = "auto"\n' in out
    # DynaConfig.warmup_iterations has a three-line docstring: every line is shown
    assert ("before model branches start,\n          so the policy never follows an untrained model. Ignored "
            "when ``warmup_env_steps`` is set.\n" in out)
    assert "(no description)" not in out

"""Config bases of plugins (the ``[env]``, ``[estimator]``… tables of a recipe).

pydantic only, no torch: registering plugins and validating recipes must stay instant."""
from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """A plugin's validated settings.

    Subclasses narrow ``kind`` to ``Literal["their_name"] = "their_name"``: that literal is the name a
    recipe uses. Unknown keys are errors (``extra="forbid"``) so a typo never goes silently unused.
    Document each field with an attribute docstring: ``mbmix-fw plugins --verbose`` shows them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: str


class EnvConfig(ComponentConfig):
    """Base config of every env plugin (recipe table ``[env]``)."""


class WorldModelConfig(ComponentConfig):
    """Base config of every world-model plugin (recipe table ``[world_model]``, optional)."""


class EstimatorConfig(ComponentConfig):
    """Base config of every estimator plugin (recipe table ``[estimator]``)."""


class SchedulerConfig(ComponentConfig):
    """Base config of every scheduler plugin (recipe table ``[scheduler]``).

    A scheduler whose plans use a world model (model branches, model fitting) sets
    ``requires_world_model = True`` so a recipe without ``[world_model]`` fails validation, not silently
    trains model-free."""

    requires_world_model: ClassVar[bool] = False

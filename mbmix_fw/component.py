"""Base of every plugin config model (the ``[env]``, ``[estimator]``… tables of a recipe)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """A plugin's validated settings.

    Subclasses narrow ``kind`` to ``Literal["their_name"] = "their_name"``: that literal is the name a
    recipe uses. Unknown keys are errors (``extra="forbid"``) so a typo never goes silently unused.
    Document each field with an attribute docstring: ``mbmix-fw plugins --verbose`` shows them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: str

"""Config bases of plugins (the ``[env]``, ``[estimator]``… tables of a recipe) and the strict base
every recipe table shares.

pydantic only, no torch: registering plugins and validating recipes must stay instant.

Why strict: TOML has real types, so a recipe that writes ``num_envs = "64"``, ``iterations = true`` or
``layer_norm = "yes"`` has a mistake in it, and coercing it would hide the mistake. Every table is
validated in pydantic's strict mode with three deliberate exceptions: an integer is accepted where a
float is expected (``actor_lr = 1`` means 1.0), a TOML array is accepted where a tuple is expected
(``betas = [0.7, 0.95]``; TOML has no tuples), and ``nan``/``inf`` are rejected in every float field.
Sizes have documented maxima (:data:`MAX_ENVS`, :data:`MAX_STEPS`, :data:`MAX_WIDTH`…) so an absurd
value is a user error naming its field instead of an allocation failure or a hang.
"""
from __future__ import annotations

import types
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_ENVS = 2**20
"""Most parallel environments a table may ask for (1 048 576; the largest GPU setups use ~10⁵)."""
MAX_STEPS = 10**6
"""Most steps in one episode or one differentiable window."""
MAX_WIDTH = 2**16
"""Widest hidden layer (65 536)."""
MAX_LAYERS = 16
"""Most hidden layers of one network."""
MAX_ITERATIONS = 10**9
"""Most iterations of any loop a recipe sets (training iterations, critic passes, fit steps)."""

NumEnvs = Annotated[int, Field(ge=1, le=MAX_ENVS)]
"""Type of a count of parallel environments, branches or samples: ``1 ≤ n ≤ MAX_ENVS``."""
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
"""Type of an episode length or window horizon: ``1 ≤ n ≤ MAX_STEPS``."""
Iterations = Annotated[int, Field(ge=0, le=MAX_ITERATIONS)]
"""Type of a loop count that may be 0: ``0 ≤ n ≤ MAX_ITERATIONS``."""
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Hidden = Annotated[list[Width], Field(max_length=MAX_LAYERS)]
"""Type of hidden layer widths: at most ``MAX_LAYERS`` layers of ``1 … MAX_WIDTH`` units (``[]``: linear)."""


class StrictTable(BaseModel):
    """Base of every recipe table: strict types, finite floats, unknown keys are errors, frozen.

    See the module docstring for what strict means here. Document each field with an attribute
    docstring: ``mbmix-fw plugins --verbose`` shows them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True,
                              strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _arrays_as_tuples(cls, data: Any) -> Any:
        """TOML (and ``recipe.json``) write tuples as arrays; strict mode would refuse a list for a tuple."""
        if not isinstance(data, dict):
            return data
        converted = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if isinstance(value, list) and field is not None:
                converted[name] = _tuples_where_expected(value, field.annotation)
        return converted


def _tuples_where_expected(value: list, annotation: Any) -> Any:
    """``value`` with arrays turned into tuples where ``annotation`` expects them: the field itself
    (``tuple[...]``) or its items (``list[tuple[...]]``, e.g. the cloth's gripper index pairs)."""
    if _is_tuple_type(annotation):
        return tuple(value)
    item = _list_item_type(annotation)
    if item is not None and _is_tuple_type(item):
        return [tuple(v) if isinstance(v, list) else v for v in value]
    return value


def _list_item_type(annotation: Any) -> Any:
    """The item type of ``list[X]`` (also inside ``Annotated`` or ``| None``), else ``None``."""
    origin = get_origin(annotation)
    if origin is list:
        args = get_args(annotation)
        return args[0] if args else None
    if origin is Annotated:
        return _list_item_type(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        items = [_list_item_type(arg) for arg in get_args(annotation)]
        return next((i for i in items if i is not None), None)
    return None


def _is_tuple_type(annotation: Any) -> bool:
    """``tuple[...]``, ``tuple[...] | None`` and ``Annotated[tuple[...], …]``."""
    origin = get_origin(annotation)
    if annotation is tuple or origin is tuple:
        return True
    if origin is Annotated:
        return _is_tuple_type(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(_is_tuple_type(arg) for arg in get_args(annotation))
    return False


class ComponentConfig(StrictTable):
    """A plugin's validated settings.

    Subclasses narrow ``kind`` to ``Literal["their_name"] = "their_name"``: that literal is the name a
    recipe uses. Unknown keys are errors (``extra="forbid"``) so a typo never goes silently unused;
    types are strict and floats finite (:class:`StrictTable`). Bound sizes with :data:`NumEnvs`,
    :data:`Steps`, :data:`Iterations` and :data:`Hidden` so an absurd value is caught at validation.
    """

    kind: str
    renamed_fields: ClassVar[dict[str, str]] = {}
    """Old field name → new, for settings a plugin renamed: a recipe that still writes the old name is read
    as the new one, with one warning line naming the file and the field (``building/moved_keys.py``)."""


class EnvConfig(ComponentConfig):
    """Base config of every env plugin (recipe table ``[env]``).

    ``num_envs`` and ``episode_length`` are read by the core (data-parallel splits, memory estimates,
    resume checks), so every env config has them, with the same bounds; a plugin overrides the defaults
    (``num_envs: mb.NumEnvs = 16``), never the types."""

    num_envs: NumEnvs = 64
    """Environments simulated in parallel for training."""
    episode_length: Steps = 200
    """Steps per episode (the rollout applies the time limit)."""


class WorldModelConfig(ComponentConfig):
    """Base config of every world-model plugin (recipe table ``[world_model]``, optional)."""

    buffer_capacity: int = Field(100_000, ge=1, le=10**9)
    """Replay-buffer size in transitions (the trainer sizes the buffer from the built model's
    ``WorldModel.buffer_capacity``, which the factory sets from this)."""


class EstimatorConfig(ComponentConfig):
    """Base config of every estimator plugin (recipe table ``[estimator]``)."""


class SchedulerConfig(ComponentConfig):
    """Base config of every scheduler plugin (recipe table ``[scheduler]``).

    A scheduler whose plans use a world model (model branches, model fitting) sets
    ``requires_world_model = True`` so a recipe without ``[world_model]`` fails validation, not silently
    trains model-free.

    ``simulator_gradient`` says whether the policy loss of the real window ever reaches the simulator
    (False for a scheduler configured never to backpropagate through it, e.g. β = 0): a world model whose
    Jacobian probes come from the actor's own backward (``probe_source = "adjoint"``) needs it, and a
    recipe that combines the two fails validation naming ``world_model.probe_source``."""

    requires_world_model: ClassVar[bool] = False

    @property
    def simulator_gradient(self) -> bool:
        return True


def component_label(slot: str, component: Any) -> str:
    """How every message names a built component: ``scheduler 'backoff_horizon'`` — the recipe table and
    the kind of its config (``component.config.kind``), or the class name of a component built in Python
    without one. One spelling, so a user can search a message for the kind they wrote in the recipe."""
    kind = getattr(getattr(component, "config", None), "kind", None)
    return f"{slot} '{kind if isinstance(kind, str) else type(component).__name__}'"

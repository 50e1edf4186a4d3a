"""What the adaptive-horizon schedulers (``ahac``, ``agree``) share: the check of their H range."""
from __future__ import annotations

from pydantic import ValidationInfo


def horizon_range_not_empty(max_horizon: int, info: ValidationInfo) -> int:
    """Field validator body of an adaptive scheduler's ``max_horizon`` (the error names the field)."""
    low = info.data.get("min_horizon")
    if low is not None and max_horizon < low:
        raise ValueError(f"max_horizon={max_horizon} is below min_horizon={low}; H lies in "
                         f"[min_horizon, max_horizon]")
    return max_horizon

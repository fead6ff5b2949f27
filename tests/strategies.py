"""Hypothesis strategies that take their bounds from the pydantic model under test, never a copy.

    within(RelayTuning, "max_attempts")     # integers in the field's ge/gt..le/lt range
    choices(Settings, "log_level")          # the values of a Literal field
    typed(Settings, "appendonly")           # either of the two, by the field's type
"""

from __future__ import annotations

import typing

from hypothesis import strategies as st
from pydantic import BaseModel


def bounds(model: type[BaseModel], field: str) -> dict[str, float]:
    """The field's declared bounds, by name: {"ge": 1, "le": 1000}."""
    found = {}
    for constraint in model.model_fields[field].metadata:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(constraint, name, None) is not None:
                found[name] = getattr(constraint, name)
    return found


def within(model: type[BaseModel], field: str) -> st.SearchStrategy:
    """Any value of a numeric field that its model's bounds allow."""
    limits = bounds(model, field)
    annotation = model.model_fields[field].annotation
    if annotation is int:
        low = limits["ge"] if "ge" in limits else limits.get("gt", -(2**63)) + 1
        high = limits["le"] if "le" in limits else limits.get("lt", 2**63) - 1
        return st.integers(low, high)
    if annotation is float:
        return st.floats(limits.get("ge", limits.get("gt")), limits.get("le", limits.get("lt")),
                         exclude_min="gt" in limits, exclude_max="lt" in limits, allow_nan=False)
    raise TypeError(f"{model.__name__}.{field}: expected an int or float field, got {annotation}")


def choices(model: type[BaseModel], field: str) -> st.SearchStrategy:
    """Any value of a Literal field."""
    return st.sampled_from(typing.get_args(model.model_fields[field].annotation))


def typed(model: type[BaseModel], field: str) -> st.SearchStrategy | None:
    """Any value of a Literal, bool, int or float field; None for other types (the caller knows them)."""
    annotation = model.model_fields[field].annotation
    if typing.get_origin(annotation) is typing.Literal:
        return choices(model, field)
    if annotation is bool:
        return st.booleans()
    if annotation in (int, float):
        return within(model, field)
    return None

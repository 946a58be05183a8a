"""The rules declared on a config field, checked in one place: floats finite, the choices of a
``Literal[...]`` annotation, and the bounds given to :func:`sae_hacking.config.setting`
(``gt``/``ge``/``lt``/``le``, with an optional ``why`` shown in the message).

:mod:`sae_hacking.config` runs :func:`check_value` on every construction of a config and before
:func:`~sae_hacking.config.from_flat` constructs; this module knows only one field at a time
(nothing of flat keys or nesting), so it imports nothing of the package but the errors.
Torch-free, like every config module.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import types
import typing
from collections.abc import Mapping
from typing import Any

from sae_hacking.errors import FieldError


def without_none(tp: Any) -> tuple[Any, bool]:
    """``(the type without None, whether None is allowed)`` of an annotation."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return inner[0], len(inner) < len(args)
    return tp, False


def literal_choices(tp: Any) -> tuple | None:
    """The allowed values of a ``Literal[...]`` annotation (also inside ``X | None``, and of each
    item of a ``tuple[Literal[...], ...]``)."""
    inner, _ = without_none(tp)
    inner = tuple_item(inner) or inner
    return typing.get_args(inner) if typing.get_origin(inner) is typing.Literal else None


def tuple_item(tp: Any) -> Any:
    """The item type of ``tuple[X, ...]``; ``None`` for any other annotation."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def check_value(key: str, value: Any, f: dataclasses.Field, hint: Any) -> None:
    """The one place the rules declared on field ``f`` (annotation ``hint``) are checked, the
    error naming ``key``: floats finite, a ``Literal``'s choices, the bounds of
    :func:`~sae_hacking.config.setting`. ``None`` passes where the annotation allows it."""
    tp, optional = without_none(hint)
    if value is None and optional:
        return
    check_finite(key, value)
    choices = literal_choices(tp)
    if choices is not None:
        items = value if tuple_item(tp) is not None else (value,)
        wrong = [item for item in items if item not in choices]
        if wrong:
            verb = "has" if tuple_item(tp) is not None else "is"
            raise FieldError(
                key, f"{verb} {wrong[0]!r}, expected one of {', '.join(str(c) for c in choices)}."
            )
    bounds = f.metadata.get("bounds")
    if bounds and not _within(value, bounds):
        why = f.metadata.get("why")
        reason = f" ({why})" if why else ""
        raise FieldError(key, f"{_bound_text(bounds, tp)}{reason}, got {value}.")


def _within(value: Any, bounds: Mapping[str, int | float]) -> bool:
    # NaN compares false with everything, so it is outside every bound (as is None here).
    return value is not None and all(
        getattr(operator, name)(value, bound) for name, bound in bounds.items()
    )


def _bound_text(bounds: Mapping[str, int | float], tp: Any) -> str:
    """``must be positive`` (gt=0), ``must not be negative`` (ge=0), ``must be at least 2``,
    ``must be between 1 and 64`` (an int in both), ``must be in [0, 1]`` (a float)."""
    low = next(((name, bounds[name]) for name in ("gt", "ge") if name in bounds), None)
    high = next(((name, bounds[name]) for name in ("lt", "le") if name in bounds), None)
    if low and high:
        if tp is int and low[0] == "ge" and high[0] == "le":
            return f"must be between {low[1]} and {high[1]}"
        left, right = "[" if low[0] == "ge" else "(", "]" if high[0] == "le" else ")"
        return f"must be in {left}{low[1]}, {high[1]}{right}"
    if low:
        name, bound = low
        if bound == 0:
            return "must be positive" if name == "gt" else "must not be negative"
        return f"must be {'more than' if name == 'gt' else 'at least'} {bound}"
    name, bound = high
    return f"must be {'less than' if name == 'lt' else 'at most'} {bound}"


def check_finite(field: str, value: Any) -> None:
    """Refuse NaN and infinities in a float setting (or a tuple of them): argparse's ``float``
    takes ``nan`` and ``inf``, and every comparison with NaN is false, so a NaN threshold would
    pass every range check and silently select nothing. No setting has a use for them."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    for item in values:
        if isinstance(item, float) and not math.isfinite(item):
            raise FieldError(field, f"must be a finite number, got {item}.")

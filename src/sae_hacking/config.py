"""Typed configs: frozen dataclasses whose fields carry their help text and their resume rule.

Every command is described by one frozen dataclass (``ToyConfig``, ``CooccurrenceConfig``,
``AblateConfig``, ...), possibly holding smaller ones (``ModelSource``, ``SAESource``,
``TextSource``, ``RunOptions``). Fields are declared with :func:`setting`; ``__post_init__``
checks values and raises :class:`~sae_hacking.errors.FieldError` naming the field. Nothing here
imports torch, so a command's settings are checked before any heavy import.

**Flat keys.** A config is saved, compared and shown as a flat ``{key: value}`` mapping of JSON
values. A leaf field's key is the ``prefix`` of every enclosing config field plus the field's own
``key`` (default: its name): ``AblateConfig.reader.release`` has key ``reader_sae_release``
(prefix ``reader_``, key ``sae_release``). Errors raised inside a nested config are re-raised with
the full key (:meth:`FieldError.within`), so every message names one flat key; the CLI derives
its flags from the same keys (``--reader-sae-release``) and is the only place that knows flags.

**Kinds of field** (``kind=``): ``"identity"`` (default) defines what a run computes: fixed on
resume, and shards must agree on it to merge; ``"extent"`` (``n_prompts``) defines it too but a
resumed, unfinished run may change it; ``"free"`` does not change the results (batch size,
device, run options): a resume may change it and merge ignores it. :func:`resume_config` is the
one resume rule for every command: ``replace(saved, **changed)`` where only non-identity fields
may change.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sae_hacking.errors import FieldError, UsageError

KINDS = ("identity", "extent", "free")
_MISSING = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    help: str,  # noqa: A002 (the word argparse uses)
    default_factory: Any = _MISSING,
    kind: str = "identity",
    key: str | None = None,
    prefix: str | None = None,
    recorded: bool = True,
    choices: tuple | None = None,
) -> Any:
    """A config field. ``help`` is the ``--help`` text; ``kind`` the resume/merge rule (module
    docstring); ``key`` overrides the field's flat key; ``prefix`` (nested configs only) is put in
    front of the nested keys; ``recorded=False`` keeps the field out of a results file's
    ``settings`` (where a run happened, not what it computed, e.g. the device); ``choices`` lists
    the allowed values (checked by the interfaces as they parse, and by :func:`check_choice`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    meta = {
        "help": help,
        "kind": kind,
        "key": key,
        "prefix": prefix,
        "recorded": recorded,
        "choices": choices,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One leaf field of a (nested) config class, as the flat view sees it."""

    key: str  # flat key
    path: tuple[str, ...]  # attribute names from the top config down to the field
    type: Any  # the resolved annotation
    default: Any  # the value in the top config's default instance
    help: str
    kind: str
    recorded: bool
    section: str  # the nested config's attribute name, "" at the top
    choices: tuple | None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def leaves(cls: type) -> tuple[Leaf, ...]:
    """Every leaf field of ``cls`` (depth first), with defaults from ``cls()``."""
    return tuple(_leaves(cls, cls(), "", (), ""))


def _leaves(cls: type, default: Any, prefix: str, path: tuple, section: str) -> Iterator[Leaf]:
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        value = getattr(default, f.name)
        if is_config(hints[f.name]):
            inner = prefix + (meta.get("prefix") or "")
            yield from _leaves(hints[f.name], value, inner, (*path, f.name), section or f.name)
            continue
        yield Leaf(
            key=prefix + (meta.get("key") or f.name),
            path=(*path, f.name),
            type=hints[f.name],
            default=value,
            help=meta.get("help", ""),
            kind=meta.get("kind", "identity"),
            recorded=meta.get("recorded", True),
            section=section,
            choices=meta.get("choices"),
        )


def leaf_map(cls: type) -> dict[str, Leaf]:
    return {leaf.key: leaf for leaf in leaves(cls)}


def json_value(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists, paths strings)."""
    if isinstance(value, Path):
        return str(value)
    return json.loads(json.dumps(value, default=str))


def to_flat(config: Any) -> dict[str, Any]:
    """The config as ``{flat key: JSON value}``."""
    out = {}
    for leaf in leaves(type(config)):
        value = config
        for name in leaf.path:
            value = getattr(value, name)
        out[leaf.key] = json_value(value)
    return out


def _coerce(tp: Any, value: Any) -> Any:
    """A JSON value (lists for tuples) back into the annotated type's shape."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(inner[0], value) if len(inner) == 1 else value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return tuple(_coerce(item, v) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_flat(cls: type, flat: Mapping[str, Any]) -> Any:
    """Build ``cls`` from flat keys; missing keys take the defaults. An unknown key is a
    :class:`UsageError`; a bad value a :class:`FieldError` naming its flat key."""
    known = leaf_map(cls)
    unknown = sorted(set(flat) - set(known))
    if unknown:
        raise UsageError(f"unknown settings {', '.join(unknown)} for {cls.__name__}.")
    return _build(cls, None, flat, "")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return f.default


def _build(cls: type, default: Any, flat: Mapping[str, Any], prefix: str) -> Any:
    """``default`` is the nested config the enclosing field's default would build, before the
    enclosing ``__post_init__`` adjusts it (e.g. an SAE's default id applies to the default
    release only), or ``None`` for the fields' own defaults."""
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        fallback = getattr(default, f.name) if default is not None else _field_default(f)
        if is_config(hints[f.name]):
            inner = prefix + (meta.get("prefix") or "")
            kwargs[f.name] = _build(hints[f.name], fallback, flat, inner)
            continue
        key = prefix + (meta.get("key") or f.name)
        kwargs[f.name] = _coerce(hints[f.name], flat[key]) if key in flat else fallback
        check_finite(key, kwargs[f.name])
    try:
        return cls(**kwargs)
    except FieldError as err:
        # A nested config names its own field; the key seen from here has the prefix in front.
        if prefix and err.field in _local_keys(cls):
            raise err.within(prefix) from None
        raise
    except TypeError as err:  # a value of the wrong JSON type, e.g. a string for a number
        raise UsageError(f"bad settings for {cls.__name__}: {err}.") from None


@functools.cache
def _local_keys(cls: type) -> frozenset[str]:
    return frozenset(f.metadata.get("key") or f.name for f in dataclasses.fields(cls))


def replace_flat(config: Any, changes: Mapping[str, Any]) -> Any:
    """``config`` with the flat keys in ``changes`` replaced (every check runs again)."""
    return from_flat(type(config), {**to_flat(config), **changes})


def resume_config(saved: Any, changes: Mapping[str, Any], complete: bool = False) -> Any:
    """The one resume rule: ``saved`` with ``changes`` applied, where only ``extent`` and
    ``free`` fields may differ from the saved values (an ``extent`` only while the run is not
    ``complete``: a finished run's results would no longer match its settings). A value is
    compared as the config normalises it, so ``--model tiny`` given from the folder the run was
    started in is the saved absolute path."""
    known = leaf_map(type(saved))
    flat = to_flat(saved)
    fixed = set(fixed_keys(saved))
    for key in changes:
        if key not in known:
            raise UsageError(f"unknown setting {key} for {type(saved).__name__}.")
    try:
        resumed = replace_flat(saved, changes)
        normalised = to_flat(resumed)
    except UsageError:  # a changed setting may be what is wrong: name it first
        resumed, normalised = None, {key: json_value(v) for key, v in changes.items()}
    for key, value in changes.items():
        if normalised[key] == flat[key]:
            continue
        kind = "identity" if key in fixed else known[key].kind
        if kind == "identity" or (kind == "extent" and complete):
            why = "the finished run" if kind == "extent" else "the run being resumed"
            raise FieldError(
                key,
                f"is {flat[key]!r} in {why}, not {json_value(value)!r}; drop it to continue "
                "that run, or start a new run.",
            )
    return resumed if resumed is not None else replace_flat(saved, changes)


def recorded_settings(config: Any, exclude_sections: tuple[str, ...] = ("run",)) -> dict:
    """The flat settings a results file records: every recorded leaf outside the run options."""
    flat = to_flat(config)
    return {
        leaf.key: flat[leaf.key]
        for leaf in leaves(type(config))
        if leaf.recorded and leaf.section not in exclude_sections
    }


def fixed_keys(config: Any) -> tuple[str, ...]:
    """Keys declared free that this config's other values make part of the results (a config
    may define ``fixed_keys()``)."""
    method = getattr(config, "fixed_keys", None)
    return tuple(method()) if method else ()


def free_keys(config: Any) -> tuple[str, ...]:
    """Recorded keys that do not change the results (see :func:`recorded_settings`)."""
    fixed = set(fixed_keys(config))
    return tuple(
        key
        for key in recorded_settings(config)
        if leaf_map(type(config))[key].kind == "free" and key not in fixed
    )


# -- shared checks ---------------------------------------------------------------------------


def check_positive(field: str, value: int | float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not value > 0:
        raise FieldError(field, f"must be positive, got {value}.")


def check_non_negative(field: str, value: int | float) -> None:
    if not value >= 0:
        raise FieldError(field, f"must not be negative, got {value}.")


def check_finite(field: str, value: Any) -> None:
    """Refuse NaN and infinities in a float setting (or a tuple of them): argparse's ``float``
    takes ``nan`` and ``inf``, and every comparison with NaN is false, so a NaN threshold would
    pass every range check and silently select nothing. No setting has a use for them."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    for item in values:
        if isinstance(item, float) and not math.isfinite(item):
            raise FieldError(field, f"must be a finite number, got {item}.")


def check_choice(field: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise FieldError(
            field, f"is {value!r}, expected one of {', '.join(str(c) for c in choices)}."
        )


def resolved_path(value: str | None) -> str | None:
    """An existing local path made absolute (a run can then resume from another folder); hub
    ids and other non-paths are kept as given."""
    if not value:
        return value
    path = Path(value).expanduser()
    if path.exists():
        return str(path.resolve())
    return value


def set_field(config: Any, name: str, value: Any) -> None:
    """Normalise a field of a frozen config inside its ``__post_init__``."""
    object.__setattr__(config, name, value)

"""Typed configs: frozen dataclasses whose fields carry their help text, their checks and their
resume rule.

Every command is described by one frozen dataclass (``ToyConfig``, ``CooccurrenceConfig``,
``AblateConfig``, ...), possibly holding smaller ones (``ModelSource``, ``SAESource``,
``TextSource``, ``RunOptions``), each a :class:`Config`. Fields are declared with :func:`setting`.
Nothing here imports torch, so a command's settings are checked before any heavy import.

**Checks, in three places.** (1) *Declared* on the field: a bound (``setting(..., gt=0)``,
``ge``, ``lt``, ``le``; ``None`` passes where the type allows it), the choices of a
``Literal[...]`` annotation (argparse's ``choices`` read the same annotation) and finiteness of
floats, all checked by :func:`~sae_hacking.config_checks.check_value`, which
:meth:`Config.__post_init__` runs for every field on every construction (``from_flat``,
``replace_flat``, resume, or ``ToyConfig(lr=-1.0)`` in Python) and :func:`from_flat` also
before it constructs. (2) *Cross-field rules* in the config's own ``__post_init__``, after
``super().__post_init__()``. (3) *The environment* (files exist, model headers parse, the hub
answers) in :meth:`Config.check_inputs`, never on construction, so a config can be rebuilt from
``run.json`` on another machine; a run calls ``config.check_inputs()`` once before it starts. Making an existing local path absolute
(:func:`resolved_path`) is normalisation, not a check, and happens on construction. Every check
raises :class:`~sae_hacking.errors.FieldError` naming one flat key.

**Flat keys.** A config is saved, compared and shown as a flat ``{key: value}`` mapping of JSON
values. **Naming a setting has one mechanism, ``setting(key=...)``**: a leaf field's flat key is
the ``key``s of its enclosing config fields followed by its own, where a leaf's key defaults to
its attribute name and a nested config's to ``""``. So ``AblateConfig.reader.release`` has key
``reader_sae_release`` (the field ``reader`` is declared with ``key="reader_"``, ``release`` with
``key="sae_release"``). Errors raised inside a nested config are re-raised with the full key
(:meth:`FieldError.within`), so every message names one flat key; the CLI derives its flags from
the same keys (``--reader-sae-release``) and is the only place that knows flags. The legacy
scripts' other spellings of a flag (``--max-tokens``) are aliases in the command table
(:mod:`sae_hacking.cli.commands`): they are accepted on the command line but never name a
setting (``run.json``, results and errors use the key).

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
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sae_hacking.config_checks import check_value, literal_choices, without_none
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
    recorded: bool = True,
    gt: int | float | None = None,
    ge: int | float | None = None,
    lt: int | float | None = None,
    le: int | float | None = None,
    why: str | None = None,
) -> Any:
    """A config field. ``help`` is the ``--help`` text (of a nested config: the title of its
    section); ``kind`` the resume/merge rule; ``key`` the flat key (of a nested config: what its
    settings' keys start with; module docstring); ``recorded=False`` keeps the field out of a
    results file's ``settings`` (where a run happened, not what it computed, e.g. the device);
    ``gt``/``ge``/``lt``/``le`` bound a number, ``why`` says why in the message ("must be at
    least 2 (BOS + a token), got 1."), checked by :func:`~sae_hacking.config_checks.check_value`.
    Allowed values come from a ``Literal[...]`` annotation."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    bounds = {
        name: v for name, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None
    }
    if why is not None and not bounds:
        raise ValueError("why explains a bound: give gt, ge, lt or le too")
    meta = {"help": help, "kind": kind, "key": key, "recorded": recorded}
    meta.update(bounds=bounds, why=why)
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
    section: str  # the outermost nested config's attribute name, "" at the top
    title: str  # that nested config field's help (its --help section), "" at the top
    choices: tuple | None  # the values of a Literal[...] annotation


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _key(f: dataclasses.Field, nested: bool) -> str:
    """The part of the flat key a field contributes: its declared ``key``, else its name (a
    nested config: nothing)."""
    key = f.metadata.get("key")
    if key is not None:
        return key
    return "" if nested else f.name


@functools.cache
def leaves(cls: type) -> tuple[Leaf, ...]:
    """Every leaf field of ``cls`` (depth first), with defaults from ``cls()``."""
    return tuple(_leaves(cls, cls(), "", (), "", ""))


def _leaves(
    cls: type, default: Any, prefix: str, path: tuple, section: str, title: str
) -> Iterator[Leaf]:
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        value = getattr(default, f.name)
        if is_config(hints[f.name]):
            yield from _leaves(
                hints[f.name],
                value,
                prefix + _key(f, nested=True),
                (*path, f.name),
                section or f.name,
                title or meta.get("help", f.name),
            )
            continue
        yield Leaf(
            key=prefix + _key(f, nested=False),
            path=(*path, f.name),
            type=hints[f.name],
            default=value,
            help=meta.get("help", ""),
            kind=meta.get("kind", "identity"),
            recorded=meta.get("recorded", True),
            section=section,
            title=title,
            choices=literal_choices(hints[f.name]),
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
    tp, _ = without_none(tp)
    origin = typing.get_origin(tp)
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
    kwargs, checks = {}, []
    for f in dataclasses.fields(cls):
        fallback = getattr(default, f.name) if default is not None else _field_default(f)
        if is_config(hints[f.name]):
            inner = prefix + _key(f, nested=True)
            kwargs[f.name] = _build(hints[f.name], fallback, flat, inner)
            continue
        key = prefix + _key(f, nested=False)
        kwargs[f.name] = _coerce(hints[f.name], flat[key]) if key in flat else fallback
        checks.append((_key(f, nested=False), kwargs[f.name], f, hints[f.name]))
    try:
        # The declared rules, also checked on construction, first here: under the tests' type
        # checker a value outside a Literal would otherwise fail the constructor's annotations.
        for check in checks:
            check_value(*check)
        return cls(**kwargs)
    except FieldError as err:
        raise _seen_from(err, prefix, cls) from None
    except TypeError as err:  # a value of the wrong JSON type, e.g. a string for a number
        raise UsageError(f"bad settings for {cls.__name__}: {err}.") from None


@functools.cache
def _local_keys(cls: type) -> frozenset[str]:
    hints = _hints(cls)
    return frozenset(_key(f, is_config(hints[f.name])) for f in dataclasses.fields(cls))


def _seen_from(err: FieldError, prefix: str, cls: type) -> FieldError:
    """An error of the nested config ``cls`` names its own field; seen from the enclosing
    config, the key has the nested config's ``prefix`` in front."""
    return err.within(prefix) if prefix and err.field in _local_keys(cls) else err


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


# -- checks ----------------------------------------------------------------------------------


class Config:
    """Base of every config class (each a frozen dataclass).

    ``__post_init__`` runs :func:`check_declared`; a config with cross-field rules defines its
    own ``__post_init__`` that calls ``super().__post_init__()`` first. :meth:`check_inputs` is
    the environment, checked once before a run, never on construction."""

    def __post_init__(self) -> None:
        check_declared(self)

    def check_inputs(self) -> None:
        """Refuse inputs this machine cannot provide (a missing file, a model folder whose
        headers do not parse, an unreachable hub), naming the flat key. This checks the nested
        configs'; a config with inputs of its own extends it."""
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            inner = getattr(self, f.name)
            if is_config(hints[f.name]) and isinstance(inner, Config):
                try:
                    inner.check_inputs()
                except FieldError as err:
                    raise _seen_from(err, _key(f, nested=True), type(inner)) from None


def check_declared(config: Any) -> None:
    """The rules declared on ``config``'s own fields (its nested configs checked theirs when
    they were built), by :func:`~sae_hacking.config_checks.check_value`."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        if not is_config(hints[f.name]):
            check_value(_key(f, nested=False), getattr(config, f.name), f, hints[f.name])


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

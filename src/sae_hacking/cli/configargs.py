"""Command-line flags generated from a typed config (:mod:`sae_hacking.config`).

The flag of a setting is its flat key with dashes (``reader_sae_release`` ->
``--reader-sae-release``); for booleans that default to true, the flag is ``--no-KEY``. What a
command adds (the legacy spellings such as ``--max-tokens``, switches such as ``--cuda``, the
section titles and metavars of ``--help``) is declared in one table,
:mod:`sae_hacking.cli.commands`, of :class:`Command` entries. Parsed
values land under their flat keys, and only the flags a user gave are in the namespace
(defaults are ``argparse.SUPPRESS``), so the command knows exactly what changed: a new run
takes the config's defaults for the rest, a resumed run the saved values
(:func:`sae_hacking.config.resume_config`). This module and :mod:`sae_hacking.cli` are the only
places that know flags; errors from below name keys, and :class:`Flags` turns them into flags.

Why our own helper rather than simple_parsing: resume needs to know which flags were given (not
their values after defaults), flags must equal the flat keys that ``run.json`` and results files
use, and the legacy spellings (``--perturbation_size``, ``--max-tokens``, ``--cuda``) must keep
working; with simple_parsing each of these is an override on top of its own naming rules, and
this file stays smaller than those overrides would be, with no extra dependency.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sae_hacking.config import Leaf, leaves
from sae_hacking.errors import FieldError, UsageError

SWITCHES_TITLE = "the legacy scripts' flags"


@dataclasses.dataclass(frozen=True)
class Switch:
    """A flag of the legacy scripts' that stands for a value of a setting (``--cuda``: ``device`` cuda)."""

    flag: str
    key: str
    value: Any
    help: str = ""

    @property
    def dest(self) -> str:
        return "switch_" + self.flag.lstrip("-").replace("-", "_")


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand whose flags come from a typed config: one row of the command table."""

    name: str
    config_path: str  # "module:Class" of its config, imported when the command is built, so
    # that building one command (the toy's) imports no other command's layers
    help: str  # its line in `sae-hacking --help`
    description: str  # the text above its own --help
    title: str = "settings"  # --help section of the config's top-level settings (a nested
    # config's section is titled by its field's help)
    aliases: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    metavars: Mapping[str, str | tuple[str, ...]] = dataclasses.field(default_factory=dict)
    switches: tuple[Switch, ...] = ()
    skip: tuple[str, ...] = ()  # keys without a flag
    help_overrides: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def config(self) -> type:
        module, _, name = self.config_path.partition(":")
        return getattr(importlib.import_module(module), name)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line pointing at ``--help`` (not the usage block)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


class Flags:
    """Flat key <-> flag of one command."""

    def __init__(self):
        self.flag_of: dict[str, str] = {}

    def add(self, key: str, flag: str) -> None:
        self.flag_of.setdefault(key, flag)

    def name(self, key: str) -> str | None:
        return self.flag_of.get(key)


def _base_type(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(inner[0]) if len(inner) == 1 else str
    if typing.get_origin(tp) is typing.Literal:  # argparse's choices are the Literal's values
        return type(typing.get_args(tp)[0])
    return tp


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


METAVAR_OF_TYPE = {int: "N", float: "F"}


def flag_for(key: str) -> str:
    return "--" + key.replace("_", "-")


def leaf_argument(leaf: Leaf, aliases: Iterable[str] = ()) -> tuple[list[str], dict[str, Any]]:
    """The flags and ``add_argument`` keywords for one setting."""
    tp = _base_type(leaf.type)
    kwargs: dict[str, Any] = {"dest": leaf.key, "default": argparse.SUPPRESS}
    help_text = leaf.help
    if tp is bool:
        if leaf.default:
            flags = ["--no-" + leaf.key.replace("_", "-")]
            kwargs["action"] = "store_false"
        else:
            flags = [flag_for(leaf.key)]
            kwargs["action"] = "store_true"
        return [*flags, *aliases], {**kwargs, "help": help_text}
    flags = [flag_for(leaf.key), *aliases]
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        kwargs["type"] = _base_type(args[0])  # a tuple of Literal: argparse checks each
        kwargs["nargs"] = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
    else:
        kwargs["type"] = tp
    if leaf.choices:
        kwargs["choices"] = leaf.choices
    if leaf.default is not None and leaf.default != ():
        help_text += f" (default {_show(leaf.default)})"
    if not leaf.choices:
        kwargs["metavar"] = METAVAR_OF_TYPE.get(kwargs["type"]) or leaf.key.split("_")[-1].upper()
    return flags, {**kwargs, "help": help_text}


def add_config_args(
    parser: argparse.ArgumentParser,
    cls: type,
    flags: Flags,
    *,
    aliases: Mapping[str, Iterable[str]] | None = None,
    skip: Iterable[str] = (),
    title: str = "settings",
    metavars: Mapping[str, str | tuple[str, ...]] | None = None,
    switches: Iterable[Switch] = (),
) -> None:
    """One flag per setting of ``cls`` (but the ``skip`` keys), grouped by nested config: the
    top-level settings under ``title``, a nested config's under its field's help."""
    aliases, metavars = aliases or {}, metavars or {}
    chosen = [leaf for leaf in leaves(cls) if leaf.key not in set(skip)]
    arguments = [leaf_argument(leaf, aliases.get(leaf.key, ())) for leaf in chosen]
    for leaf, (names, _) in zip(chosen, arguments, strict=True):
        flags.add(leaf.key, names[0])
    groups: dict[str, argparse._ArgumentGroup] = {}
    for leaf, (names, kwargs) in zip(chosen, arguments, strict=True):
        group_title = leaf.title or title
        if group_title not in groups:
            groups[group_title] = parser.add_argument_group(group_title)
        if leaf.key in metavars:
            kwargs["metavar"] = metavars[leaf.key]
        # Help texts refer to other settings as `key`; show them as this command's flags.
        kwargs["help"] = UsageError(kwargs["help"]).render(flags.name).replace("%", "%%")
        groups[group_title].add_argument(*names, **kwargs)
    switches = tuple(switches)
    if switches:
        group = parser.add_argument_group(SWITCHES_TITLE)
        for switch in switches:
            group.add_argument(switch.flag, action="store_true", dest=switch.dest, help=switch.help)
        parser.set_defaults(switches=switches)


def add_command_args(
    parser: argparse.ArgumentParser,
    command: Command,
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """``command``'s flags on ``parser``, which runs ``func``."""
    flags = Flags()
    add_config_args(
        parser,
        command.config,
        flags,
        aliases=command.aliases,
        skip=command.skip,
        title=command.title,
        metavars=command.metavars,
        switches=command.switches,
    )
    for action in parser._actions:
        if action.dest in command.help_overrides:
            action.help = UsageError(command.help_overrides[action.dest]).render(flags.name)
    parser.set_defaults(func=func, flags=flags)
    return parser


def command_parser(subparsers, command: Command) -> argparse.ArgumentParser:
    """The subparser of ``command`` (flags not yet added)."""
    return subparsers.add_parser(command.name, help=command.help, description=command.description)


def script_parser(command: Command, script: str) -> argparse.ArgumentParser:
    """``command`` as the legacy script ``script`` (flags not yet added)."""
    return OneLineParser(prog=script, description=command.description)


def apply_switches(namespace: argparse.Namespace) -> None:
    """Each switch given (``--cuda``) as the setting it stands for (``device`` cuda); a switch
    and a flag that disagree are refused."""
    for switch in getattr(namespace, "switches", ()):
        if getattr(namespace, switch.dest, False):
            given_value = getattr(namespace, switch.key, switch.value)
            if given_value != switch.value:
                raise FieldError(switch.key, f"{given_value} contradicts {switch.flag}; give one.")
            setattr(namespace, switch.key, switch.value)


def given(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of ``cls`` the user gave on the command line (switches included), by flat
    key."""
    apply_switches(namespace)
    keys = {leaf.key for leaf in leaves(cls)}
    return {key: value for key, value in vars(namespace).items() if key in keys}


def config_from(
    namespace: argparse.Namespace, cls: type, kind: str, extendable: bool = False
) -> Any:
    """The command's config: the flags given over the defaults, or, with ``resume``, over the
    resumed run's saved settings (:func:`sae_hacking.runs.record.resumed_config`)."""
    from sae_hacking.config import from_flat

    values = given(namespace, cls)
    if values.get("resume") is not None:
        from sae_hacking.runs.record import resumed_config

        return resumed_config(cls, values.pop("resume"), kind, values, extendable)
    return from_flat(cls, values)

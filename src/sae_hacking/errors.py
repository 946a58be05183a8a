"""The exception types that mean "the user gave bad input".

Interfaces catch :class:`UsageError`, print its message (one sentence naming the input and what was
expected) and exit with code 2. Everything else is a bug and keeps its traceback.

Library code names settings by their config key (``n_prompts``, see :mod:`sae_hacking.config`),
never by a command-line flag. A bad value of one setting is a :class:`FieldError`; any message
may refer to another setting as `` `key` `` (in backticks). The CLI, which alone knows the flags,
prints each such name as its flag (:meth:`UsageError.render`): ``--n-prompts must be positive,
got 0.``
"""

from __future__ import annotations

import re
from collections.abc import Callable

EXIT_USAGE = 2
SETTING_REFERENCE = re.compile(r"`([a-z][a-z0-9_]*)`")


class UsageError(Exception):
    """Bad input from the user; the message names the input and what was expected."""

    def render(self, name_of: Callable[[str], str | None]) -> str:
        """The message with every `` `key` `` shown as ``name_of(key)`` (kept as it is where
        that gives ``None``)."""

        def name(match: re.Match) -> str:
            return name_of(match.group(1)) or match.group(0)

        return SETTING_REFERENCE.sub(name, str(self))


class SettingWarning(UserWarning):
    """A warning for the user whose text may refer to settings as `` `key` `` (the CLI shows
    them as flags, like :meth:`UsageError.render`)."""


class FieldError(UsageError):
    """A bad value of the setting ``field`` (a flat config key): ``FieldError("n_prompts",
    "must be positive, got 0.")`` reads "n_prompts must be positive, got 0."."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"`{field}` {message}")

    def within(self, prefix: str) -> FieldError:
        """The same error for the field seen from an enclosing config (key ``prefix + field``)."""
        return FieldError(prefix + self.field, self.message)

"""The one exception type that means "the user gave bad input".

Interfaces catch :class:`UsageError`, print its message (one sentence naming the input and what was
expected) and exit with code 2. Everything else is a bug and keeps its traceback.
"""

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user; the message names the input and what was expected."""

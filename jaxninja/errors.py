"""The one exception a user sees.

Anything raised as `UsageError` is a problem with the user's input (a file, a flag, a checkpoint)
and reaches the terminal as a single line saying what to do; the CLI turns it into exit code 2.
Everything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """Bad input: the message is one line that says what to do."""


class Interrupted(UsageError):
    """Ctrl-C during training: the state was saved; the message says where and how to resume."""

"""The exceptions a user sees.

Anything raised as `UsageError` is a problem with the user's input (a file, a flag, a checkpoint)
and reaches the terminal as a single line saying what to do; the CLI turns it into exit code 2.
`Interrupted` is a run stopped by a signal after saving: its line says how to resume, its exit
code is the shell's for that signal. Everything else is a bug and keeps its traceback.
"""

import signal


class UsageError(Exception):
    """Bad input: the message is one line that says what to do."""


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM: the state was saved; the message says where and
    how to resume."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


class LostProcess(Exception):
    """A multi-process run whose collective failed because another process died: the message
    names it and how to resume. The CLI leaves at once (os._exit), skipping JAX's shutdown
    barrier, which would wait for the lost process until the heartbeat timeout and then abort."""

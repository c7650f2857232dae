"""One clear line for bad input, instead of a traceback.

Anything the user can fix (a missing model file, a malformed dataset row, an unreachable
endpoint) is raised as `RunnerError(what, hint)`; the entrypoint prints it as a single line
and exits non-zero. Hydra itself already reports unknown config options that way.
"""

from __future__ import annotations

import sys


class RunnerError(Exception):
    """An error the user can fix; `hint` says how."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} -- {self.hint}" if self.hint else self.message


def exit_with(err: BaseException, code: int = 1) -> None:
    """Print `err` as one line on stderr and exit with `code`."""
    print(f"error: {err}", file=sys.stderr, flush=True)
    sys.exit(code)


def find_user_error(exc: BaseException) -> RunnerError | None:
    """The RunnerError behind `exc`, if any: Hydra's instantiate wraps errors raised by a
    `_target_` in InstantiationException, keeping the original as the cause."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RunnerError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None

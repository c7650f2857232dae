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


def _model_cannot_follow(exc: BaseException) -> RunnerError | None:
    """DSPy re-raises an unparseable reply once an optimizer's `max_errors` is used up: the model
    cannot produce this signature's fields as configured. That is a setup to change, not a bug.
    (Matched by name so this module stays free of heavy imports.)"""
    if type(exc).__name__ != "AdapterParseError":
        return None
    reply = " ".join(str(getattr(exc, "lm_response", "") or "").split())
    reply = reply if len(reply) <= 80 else reply[:77] + "..."
    return RunnerError(f"the LM's replies did not parse into the signature's output fields too often "
                       f"(last reply: {reply!r})",
                       "try adapter=plain for a small model, a larger model, or a higher optimizer.init.max_errors")


def find_user_error(exc: BaseException) -> RunnerError | None:
    """The RunnerError behind `exc`, if any: Hydra's instantiate wraps errors raised by a
    `_target_` in InstantiationException, keeping the original as the cause."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RunnerError):
            return exc
        if (converted := _model_cannot_follow(exc)) is not None:
            return converted
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None

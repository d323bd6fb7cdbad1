"""User-facing errors and exit codes, the same in all four scripts: one ``error: ...`` line on stderr, no traceback.

Exit codes: 0 done, 2 bad input or refused (:class:`UserError`), 3 diverged (:class:`DivergedError`),
130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input from the user (recipe, path, column, option), or a refused request. One line, exit code 2."""


class DivergedError(Exception):
    """Training produced a non-finite loss or gradient norm. One line, exit code 3."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())  # never more than one line, whatever the message holds
    return text or type(err).__name__


def exit_on_user_error(func: F) -> F:
    """Wrap an entry point so that a user error, a divergence or an interrupt is one line and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        interrupt_on_sigterm()
        try:
            return func(*args, **kwargs)
        except UserError as err:
            print(f"error: {_one_line(err)}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except DivergedError as err:
            print(f"error: {_one_line(err)}", file=sys.stderr)
            sys.exit(EXIT_DIVERGED)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler stopping the job, ``kill``) is an interrupt like Ctrl-C: exit code 130, finished work kept
    for a resume. Training replaces it with its graceful stop (a checkpoint after the current step)."""
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, _raise_interrupt)


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string: the one "did you mean" helper."""
    close = difflib.get_close_matches(str(name), sorted(set(known)), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def reject_unknown_keys(data: Iterable[str], known: Iterable[str], kind: str, where: str) -> None:
    """An unknown key is an error that names where it is and suggests the closest known one."""
    known = set(known)
    for key in data:
        if key not in known:
            raise UserError(f"unknown {kind} key '{key}' in {where}{suggest(key, known)}")

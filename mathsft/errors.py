"""User-facing errors: one clear line on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import yaml

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """Bad input from the user (recipe, path, column, option). Printed as one line, exit code 2."""


def exit_on_user_error(func: F) -> F:
    """Wrap an entry point so a ``UserError`` (or an argument-parsing ``ValueError`` from TrlParser) is one line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def load_yaml_mapping(path: str, kind: str) -> dict[str, Any]:
    """Read a YAML file (a recipe, a study config) that must hold a mapping; each failure is one line."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError as err:
        raise UserError(f"{kind} not found: {path}") from err
    except yaml.YAMLError as err:
        raise UserError(f"malformed {kind} YAML {path}: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise UserError(f"the {kind} {path} must contain a YAML mapping of key: value")
    return data


def reject_unknown_keys(data: dict[str, Any], known: Iterable[str], kind: str, path: str) -> None:
    """An unknown key is an error that suggests the closest known one."""
    known = sorted(set(known))
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"unknown {kind} key '{key}' in {path}{hint}")

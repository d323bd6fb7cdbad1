"""The one command-line front end of the entry scripts: ``--config file.yaml`` plus ``--key value`` overrides, parsed
into dataclasses by ``trl.TrlParser``, with a short ``--help`` and the full list behind ``--help_all``.

What it adds to ``TrlParser``:

- ``--help`` prints a short, hand-picked page (:class:`CommandHelp`, at most 60 lines); ``--help_all`` prints
  argparse's full list, ``--config`` included (TrlParser pops ``--config`` before argparse sees it, so argparse
  never lists it).
- Every failure is one ``error: ...`` line (:class:`~mathsft.errors.UserError`): an unknown option or config key
  gets a "did you mean", a bad value names the option, and no argparse usage block is printed.
- Options are never abbreviated (``--learn 1e-4`` is an error, not a silent ``--learning_rate``).
- ``--no_<field>`` (which ``HfArgumentParser`` adds for a bool field that defaults to True, copying the field's help)
  is described as what it does.
- It reports which keys the config file and the command line set (:class:`CommandLine`), for the callers' own
  checks (fields the project replaces, mappings merged key by key).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar, cast, overload

from mathsft.config_files import config_path, load_yaml_mapping
from mathsft.errors import UserError, reject_unknown_keys, suggest

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

MAX_SHORT_HELP_LINES = 60
HELP_FLAGS = ("-h", "--help")
HELP_ALL_FLAG = "--help_all"
CONFIG_ENV_KEY = "env"  # TrlParser's extra config key: environment variables to set
_COLUMN = 36  # where the help text of an option starts in the short help


@dataclass(frozen=True)
class Option:
    """One line of the short help: ``--name METAVAR   help``. ``name`` must be a field of the parsed dataclasses."""

    name: str
    metavar: str
    help: str


@dataclass(frozen=True)
class CommandHelp:
    """The short ``--help`` page of a script."""

    usage: str
    description: str
    config: str | None  # what --config takes (None: the script has no config file)
    sections: tuple[tuple[str, tuple[Option, ...]], ...]
    examples: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def option_names(self) -> list[str]:
        return [option.name for _, options in self.sections for option in options]


@dataclass
class CommandLine:
    """What the user gave: the config file and its mapping, and the option names set on the command line."""

    argv: list[str]
    config_file: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    given: set[str] = field(default_factory=set)  # dataclass field names set on the command line

    def sets(self, name: str) -> bool:
        """Whether the config file or the command line sets ``name``."""
        return name in self.config or name in self.given


def _make_parser(dataclass_types: tuple[type, ...], prog: str) -> Any:
    """A ``TrlParser`` that reports errors as one line and never abbreviates (trl is imported here, not at module
    import, so that the short ``--help`` page needs no trl)."""
    from trl import TrlParser

    class OneLineParser(TrlParser):
        def error(self, message: str) -> NoReturn:  # argparse's usage block + exit 2 -> one line
            raise UserError(f"{message}; {prog} --help lists the options")

    parser = OneLineParser(cast(Any, dataclass_types), prog=prog, allow_abbrev=False)
    for action in parser._actions:
        negated = next((s for s in action.option_strings if s.startswith("--no_")), None)
        if negated is not None:  # argparse takes the default from the positive option, listed first
            action.help, action.default = f"Same as --{negated.removeprefix('--no_')} false.", argparse.SUPPRESS
    return parser


def _normalize(argv: list[str]) -> list[str]:
    """``--config=file`` -> ``--config file``: TrlParser only finds the spaced form."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("--config="):
            out += ["--config", arg.split("=", 1)[1]]
        else:
            out.append(arg)
    return out


def option_name(token: str, known: set[str]) -> str | None:
    """The field a command-line token sets (``--learning-rate=1`` -> ``learning_rate``); None for a value."""
    if not token.startswith("--") or token == "--":
        return None
    name = token[2:].split("=", 1)[0].replace("-", "_")
    if name not in known and name.startswith("no_") and name[3:] in known:
        return name[3:]
    return name


def given_options(argv: list[str], known: set[str]) -> set[str]:
    """Every option name a command line sets, known or not (``--config`` excluded)."""
    names = {option_name(token, known) for token in argv}
    return {name for name in names if name is not None and name != "config"}


def _field_names(dataclass_types: tuple[type, ...]) -> set[str]:
    return {f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}


def format_short_help(help_page: CommandHelp) -> str:
    lines = [f"usage: {help_page.usage}", "", help_page.description]
    if help_page.config is not None:
        lines += ["", *_option_lines([Option("config", "FILE.yaml", help_page.config)])]
    for title, options in help_page.sections:
        lines += ["", f"{title}:", *_option_lines(options)]
    lines += ["", *_option_lines([Option("help_all", "", "every option, with its help and default")])]
    if help_page.examples:
        lines += ["", "examples:", *(f"  {example}" for example in help_page.examples)]
    if help_page.notes:
        lines += ["", *help_page.notes]
    return "\n".join(lines) + "\n"


def _option_lines(options: Any) -> list[str]:
    lines = []
    for option in options:
        flag = f"  --{option.name} {option.metavar}".rstrip()
        if len(flag) > _COLUMN - 2:
            lines += [flag, " " * _COLUMN + option.help]
        else:
            lines.append(flag.ljust(_COLUMN) + option.help)
    return lines


def format_full_help(dataclass_types: tuple[type, ...], help_page: CommandHelp, prog: str) -> str:
    parser = _make_parser(dataclass_types, prog)
    if help_page.config is not None:  # for the listing only: TrlParser handles --config itself
        parser.add_argument("--config", metavar="FILE.yaml", help=help_page.config)
    parser.add_argument(HELP_ALL_FLAG, action="store_true", help="Show this full list of options and exit.")
    return str(parser.format_help())


def _print_help_and_exit(argv: list[str], dataclass_types: tuple[type, ...], help_page: CommandHelp, prog: str) -> None:
    if HELP_ALL_FLAG in argv:
        sys.stdout.write(format_full_help(dataclass_types, help_page, prog))
        raise SystemExit(0)
    if any(flag in argv for flag in HELP_FLAGS):
        sys.stdout.write(format_short_help(help_page))
        raise SystemExit(0)


def _read_config(argv: list[str], kind: str) -> tuple[str | None, dict[str, Any]]:
    path = config_path(argv)
    return (None, {}) if path is None else (path, load_yaml_mapping(path, kind))


def _field_hints(dataclass_types: tuple[type, ...]) -> dict[str, tuple[Any, Any]]:
    """``{field name: (type hint, default)}`` of every init field; a hint that cannot be resolved is ``Any``."""
    hints: dict[str, tuple[Any, Any]] = {}
    for cls in dataclass_types:
        try:
            resolved = typing.get_type_hints(cls)
        except Exception:  # noqa: BLE001 - a library's annotation we cannot evaluate: leave its values to argparse
            resolved = {}
        for f in dataclasses.fields(cls):
            if f.init:
                hints.setdefault(f.name, (resolved.get(f.name, Any), f.default))
    return hints


def _type_problem(value: Any, hint: Any, text_converts: bool = True) -> str | None:
    """Why a YAML value cannot be of a field's type, or None. Text is fine for numbers and bools when the parser
    converts it (``text_converts``; it names the option if it cannot); a list takes one item of its item type too
    (as ``--key value`` does)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar) or origin is typing.Literal:
        return None
    if origin in (typing.Union, types.UnionType):
        problems = {option: _type_problem(value, option, text_converts) for option in args}
        if any(p is None for p in problems.values()):
            return None
        # Explain with the option of the value's own shape (a list against list[str]), never with "expected null".
        shaped = [o for o in args if isinstance(value, list) == (typing.get_origin(o) in (list, tuple, set))]
        return problems[next((o for o in shaped if o is not type(None)), args[0])]
    if hint is type(None):
        return None if value is None else f"is {_kind(value)}, expected null"
    if origin in (list, tuple, set) or hint in (list, tuple, set):
        item = args[0] if args else Any
        if isinstance(value, list):
            found = ((i, _type_problem(v, item, text_converts)) for i, v in enumerate(value, start=1))
            return next((f"item {i} {p}" for i, p in found if p), None)
        scalar_ok = not isinstance(value, dict) and _type_problem(value, item, text_converts) is None
        return None if scalar_ok else f"is {_kind(value)}, expected a list"
    if origin is dict or hint is dict:
        return None if isinstance(value, dict) else f"is {_kind(value)}, expected a mapping"
    if isinstance(value, list | dict):
        return f"is {_kind(value)}, expected {_hint_text(hint)}"
    is_text = isinstance(value, str)
    if hint is bool:
        ok = isinstance(value, bool) or (is_text and text_converts)
    elif hint is int:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (is_text and text_converts)
    elif hint is float:
        ok = (isinstance(value, int | float) and not isinstance(value, bool)) or (is_text and text_converts)
    elif hint is str:
        ok = is_text
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        ok = isinstance(value, str | hint)
    else:
        return None  # other classes: the dataclass checks the value
    quote = " (quote it in YAML)" if hint is str else ""
    return None if ok else f"is {_kind(value)}, expected {_hint_text(hint)}{quote}"


def _kind(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"


def _hint_text(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return f"a name of {hint.__name__}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(hint, str(hint))


def check_config_types(
    config: dict[str, Any], dataclass_types: tuple[type, ...], where: str, text_converts: bool = True
) -> None:
    """Every value of a config file against its field's type, before anything reads or expands it: a list where a
    number belongs, numbers where text belongs, a list of lists; one line naming the key. ``text_converts``: the
    values go through the command-line parser, which turns text into numbers (false: the mapping is used as is)."""
    hints = _field_hints(dataclass_types)
    for key, value in config.items():
        if key not in hints:
            continue
        hint, default = hints[key]
        if value is None:
            if default is None or _type_problem(None, hint, text_converts) is None:
                continue
            raise UserError(f"'{key}' in {where} is null; remove it to keep the default")
        problem = _type_problem(value, hint, text_converts)
        if problem is not None:
            raise UserError(f"'{key}' in {where} {problem}")


def _culprit(message: str, command_line: CommandLine, known: set[str]) -> str:
    """`` value of 'key'`` for the option a dataclass's own check refused (its message names the value, not the
    key), found by the key or the value that the message quotes; empty when no single option is found."""
    values = dict(command_line.config)
    for index, token in enumerate(command_line.argv):
        name = option_name(token, known)
        if name in known and "=" not in token and index + 1 < len(command_line.argv):
            values[name] = command_line.argv[index + 1]
        elif name in known:
            values[name] = token.split("=", 1)[1]
    named = [key for key in values if key in known and re.search(rf"\b{re.escape(key)}\b", message)]
    quoted = [key for key, value in values.items() if key in known and isinstance(value, str | int | float)
              and str(value) and re.search(rf"(?<![\w.-]){re.escape(str(value))}(?![\w.-])", message)]  # fmt: skip
    found = named or quoted
    return f" (value of '{found[0]}')" if len(found) == 1 else ""


def reject_unknown_options(names: set[str], known: set[str], prog: str) -> None:
    """An option that no dataclass has is one line with the closest known one."""
    for name in sorted(names - known):
        raise UserError(f"unknown option --{name}{suggest(name, known)}; {prog} --help_all lists every option")


def _reject_leftovers(remaining: list[str], known: set[str], prog: str) -> None:
    """What argparse did not consume: a stray value, or an option it refused."""
    for token in remaining:
        name = option_name(token, known)
        if name is None:
            raise UserError(f"unexpected argument '{token}' (options are --key value); {prog} --help lists them")
        raise UserError(f"unknown option {token}{suggest(name, known)}; {prog} --help_all lists every option")


@overload
def parse_command_line(
    dataclass_types: tuple[type[A]],
    argv: list[str],
    help_page: CommandHelp,
    prog: str,
    kind: str,
    precheck: Callable[[CommandLine], None] | None = None,
    key_kind: str | None = None,
) -> tuple[tuple[A], CommandLine]: ...


@overload
def parse_command_line(
    dataclass_types: tuple[type[A], type[B], type[C]],
    argv: list[str],
    help_page: CommandHelp,
    prog: str,
    kind: str,
    precheck: Callable[[CommandLine], None] | None = None,
    key_kind: str | None = None,
) -> tuple[tuple[A, B, C], CommandLine]: ...


def parse_command_line(
    dataclass_types: tuple[type, ...],
    argv: list[str],
    help_page: CommandHelp,
    prog: str,
    kind: str,
    precheck: Callable[[CommandLine], None] | None = None,
    key_kind: str | None = None,
) -> tuple[tuple[Any, ...], CommandLine]:
    """``--config`` (a ``kind`` file, e.g. "recipe") plus ``--key value`` overrides -> one instance per dataclass.

    ``--help`` / ``--help_all`` print and exit 0. ``precheck`` sees what the user set before the unknown-key checks
    (so it can point a known foreign key to its replacement). An unknown key in the file is "unknown <key_kind> key"
    (default: ``kind``). Every failure, a bad value in a dataclass's own checks
    included, is a :class:`UserError` (``bad <kind>: ...`` for the latter, with the original exception as cause).
    """
    argv = _normalize(list(argv))
    _print_help_and_exit(argv, dataclass_types, help_page, prog)
    known = _field_names(dataclass_types)
    config_file, config = _read_config(argv, kind)
    command_line = CommandLine(argv, config_file, config, given_options(argv, known))
    if precheck is not None:
        precheck(command_line)
    # Before any dataclass check runs: a typo must not surface as a complaint about some other setting.
    if config_file is not None:
        reject_unknown_keys(config, known | {CONFIG_ENV_KEY}, key_kind or kind, config_file)
        check_config_types(config, dataclass_types, config_file)
    reject_unknown_options(command_line.given, known, prog)
    parser = _make_parser(dataclass_types, prog)
    try:
        *values, _, remaining = parser.parse_args_and_config(
            args=argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    except (ValueError, TypeError) as err:
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"bad {kind}{_culprit(message, command_line, known)}: {message}") from err
    _reject_leftovers(list(remaining), known, prog)
    return tuple(cast(list[Any], values)), command_line

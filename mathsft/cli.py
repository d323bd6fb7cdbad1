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
import sys
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
    reject_unknown_options(command_line.given, known, prog)
    parser = _make_parser(dataclass_types, prog)
    try:
        *values, _, remaining = parser.parse_args_and_config(
            args=argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    except (ValueError, TypeError) as err:
        raise UserError(f"bad {kind}: {str(err).strip().splitlines()[0]}") from err
    _reject_leftovers(list(remaining), known, prog)
    return tuple(cast(list[Any], values)), command_line

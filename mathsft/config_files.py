"""YAML configuration files (recipes, study configs): loading a mapping and finding ``--config`` in argv."""

from __future__ import annotations

from typing import Any

import yaml

from mathsft.errors import UserError


def load_yaml_mapping(path: str, kind: str) -> dict[str, Any]:
    """Read a YAML file (a recipe, a study config) that must hold a mapping; each failure is one line."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError as err:
        raise UserError(f"{kind} not found: {path}") from err
    except IsADirectoryError as err:
        raise UserError(f"{kind} {path} is a directory, not a YAML file") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{kind} {path} is not UTF-8 text") from err
    except yaml.YAMLError as err:
        raise UserError(f"malformed {kind} YAML {path}: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise UserError(f"the {kind} {path} must contain a YAML mapping of key: value")
    return data


def config_path(argv: list[str]) -> str | None:
    """The file after ``--config`` (or ``--config=file``) in an argument list, None without one."""
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config":
            if index + 1 >= len(argv):
                raise UserError("--config needs a file")
            return argv[index + 1]
    return None

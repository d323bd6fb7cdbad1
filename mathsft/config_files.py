"""YAML configuration files (recipes, study configs): loading a mapping and finding ``--config`` in argv."""

from __future__ import annotations

from typing import Any

import yaml

from mathsft.errors import UserError

# A recipe or a study config has a few dozen values; aliases may not expand a file beyond this many (a "billion
# laughs" file of 1.4 KB expands to 10^9 values, which any later walk over the data would never finish).
MAX_YAML_VALUES = 10_000


class _CheckedLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that checks the composed document before building any value: no key twice in one mapping
    (YAML would silently keep the last), and no more than :data:`MAX_YAML_VALUES` values once aliases expand."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            nodes = _inner_first(node)
            _check_duplicate_keys(nodes)
            _check_expanded_size(nodes)
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _inner_first(root: yaml.Node) -> list[yaml.Node]:
    """Every distinct node once (aliases share nodes, so a bomb has few), each after the nodes it contains; without
    recursion, so a deep file cannot overflow the stack. A node that contains itself (a recursive alias) is an error."""
    order: list[yaml.Node] = []
    state: dict[int, str] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            state[id(node)] = "done"
            order.append(node)
            continue
        if state.get(id(node)) == "done":
            continue
        state[id(node)] = "open"
        stack.append((node, True))
        for child in _children(node):
            if state.get(id(child)) == "open":
                raise yaml.constructor.ConstructorError(None, None, "an alias refers to itself", child.start_mark)
            stack.append((child, False))
    return order


def _check_duplicate_keys(nodes: list[yaml.Node]) -> None:
    """Nested mappings too; keys compare by resolved tag and text ("1" and 1 are two keys, as in YAML)."""
    for node in nodes:
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            seen = first.setdefault((key.tag, key.value), key)
            if seen is not key:
                lines = f"lines {seen.start_mark.line + 1} and {key.start_mark.line + 1}"
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key.value}' ({lines})")


def _check_expanded_size(nodes: list[yaml.Node]) -> None:
    """The values the document expands to, a shared node counted once per reference, in time linear in the distinct
    nodes: a 1.4 KB "billion laughs" is refused in milliseconds, before any value is built."""
    sizes: dict[int, int] = {}
    for node in nodes:  # inner nodes first
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
        if sizes[id(node)] > MAX_YAML_VALUES:
            raise yaml.constructor.ConstructorError(
                None, None, f"aliases expand it beyond {MAX_YAML_VALUES:,} values (an alias bomb?)", node.start_mark
            )


def load_yaml_mapping(path: str, kind: str) -> dict[str, Any]:
    """Read a YAML file (a recipe, a study config) that must hold a mapping; each failure is one line (a duplicate
    key names both lines; an alias bomb is refused before it expands)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_CheckedLoader)  # noqa: S506 - a SafeLoader with extra checks
    except FileNotFoundError as err:
        raise UserError(f"{kind} not found: {path}") from err
    except IsADirectoryError as err:
        raise UserError(f"{kind} {path} is a directory, not a YAML file") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{kind} {path} is not UTF-8 text") from err
    except yaml.YAMLError as err:
        raise UserError(f"malformed {kind} YAML {path}: {_yaml_error_text(err)}") from err
    except RecursionError as err:  # thousands of nested brackets: the composer recurses per level
        raise UserError(f"malformed {kind} YAML {path}: nested too deeply to read") from err
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


def _yaml_error_text(err: yaml.YAMLError) -> str:
    """The problem and where it is, in one line: ``duplicate key 'lr' (lines 3 and 9) (line 9, column 1)``."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{err.problem}{where}"
    return str(err).splitlines()[0]

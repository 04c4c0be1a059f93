"""An argparse parser rebuilt from a dumped SGLang parser (the bundled 0.5.23 surface), so the simulator
accepts and refuses exactly what that SGLang version does: names, aliases, unique prefixes, types, choices
and nargs, with argparse's own messages and exit code 2.

Parsing only: what the values mean to the simulator is args.py's.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from collections.abc import Callable
from typing import Any

from tuner.runtime.engines.surface import FlagSpec, FlagSurface

_HUMAN = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([kKmMgGtT]?)\s*")
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "t": 1_000_000_000_000}


def human_readable_int(text: str) -> int:
    """'4096', '4k', '1M' -> int (SGLang 0.5.23's human_readable_int; decimal multiples)."""
    m = _HUMAN.fullmatch(str(text))
    if not m:
        raise ValueError(text)
    return int(float(m.group(1)) * _SCALE[m.group(2).lower()])


def loads(text: str) -> Any:
    return json.loads(text)


def json_list_type(text: str) -> Any:
    value = json.loads(text)
    if not isinstance(value, list):
        raise TypeError(text)  # argparse reports both as "invalid json_list_type value"
    return value


def nullable_str(text: str) -> str | None:
    return None if text.lower() in ("", "none", "null") else text


TYPES: dict[str, Callable[[str], Any] | None] = {
    "int": int, "float": float, "str": str, "None": None,
    "human_readable_int": human_readable_int, "loads": loads, "json_list_type": json_list_type,
    "nullable_str": nullable_str,
    # SGLang's own parsers; choices (in the dump) hold what they accept
    "parse_cuda_graph_backend_arg": str, "parse_cuda_graph_config_arg": str,
}


def _default(spec: FlagSpec) -> Any:
    if spec.default is None:
        return None
    try:
        return ast.literal_eval(spec.default)
    except (ValueError, SyntaxError):
        return spec.default


def add_surface_arguments(parser: argparse.ArgumentParser, surface: FlagSurface,
                          skip: frozenset[str] = frozenset()) -> None:
    """Add every option of `surface` (grouped by primary name, aliases as extra option strings) to
    `parser`; primaries in `skip` are left to the caller."""
    groups: dict[str, list[FlagSpec]] = {}
    for spec in surface.specs.values():
        groups.setdefault(spec.primary, []).append(spec)
    for primary, specs in sorted(groups.items()):
        if primary in skip:
            continue
        first = next((s for s in specs if s.name == primary), specs[0])
        action = first.action
        names = [f"--{primary}"] + sorted(f"--{s.name}" for s in specs if s.name != primary)
        kwargs: dict[str, Any] = {"dest": first.dest, "default": _default(first)}
        if action == "BooleanOptionalAction":
            names = [n for n in names if not n.startswith("--no-")]
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if action in ("_StoreTrueAction", "DeprecatedStoreTrueAction"):
            parser.add_argument(*names, action="store_true", **kwargs)
            continue
        if action == "_StoreFalseAction":
            parser.add_argument(*names, action="store_false", **kwargs)
            continue
        if action in ("_StoreConstAction", "DeprecatedStoreConstAction"):
            const = first.choices[0] if first.choices else True
            parser.add_argument(*names, action="store_const", const=const, **kwargs)
            continue
        kind = TYPES.get(first.type, str)
        if kind is not None:
            kwargs["type"] = kind
        if first.nargs is not None:
            kwargs["nargs"] = first.nargs
        if first.choices is not None:
            kwargs["choices"] = _typed_choices(first.choices, kind)
        parser.add_argument(*names, **kwargs)


def _typed_choices(choices: tuple[str, ...], kind: Callable[[str], Any] | None) -> list[Any]:
    if kind in (int, float):
        try:
            return [kind(c) for c in choices]
        except ValueError:
            pass
    return list(choices)

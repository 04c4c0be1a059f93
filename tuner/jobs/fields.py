"""Job options declared once, as fields of a frozen dataclass, from which both the command-line arguments and
a request body (a JSON object with the same field names) are derived.

`option(...)` adds what argparse needs (help, choices, a parser for the text); `add_arguments` declares the
arguments, `from_namespace` and `from_dict` build the spec and check every value with one clear line
(`JobError`). Knows nothing of any particular job.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from tuner.errors import JobError

S = TypeVar("S")
_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, *, help: str = "", choices: Iterable[Any] | None = None,
           parse: Callable[[str], Any] | None = None, flag: str | None = None, metavar: str | None = None,
           group: str = "", off: str | None = None, off_help: str = "") -> Any:
    """A spec field with what its command-line argument needs. A tuple field is a repeatable argument
    (`--flag A --flag B`), a bool field a switch, a `bool | None` field defaulting to None a pair of switches
    (`--name` / `off`, default `--no-name`, described by `off_help`) left None when neither is given; `flag`
    overrides the argument's name (default: the field name with dashes); `group` names the --help section it
    is listed under."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "parse": parse,
            "flag": flag, "metavar": metavar, "group": group, "off": off, "off_help": off_help}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple (or None) as the default of a repeatable option")
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _kind(cls: type, f: dataclasses.Field[Any]) -> Any:
    """The field's type with Optional stripped (int | None -> int)."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _help(f: dataclasses.Field[Any]) -> str:
    text = f.metadata.get("help", "")
    if f.default not in (_MISSING, None, False, ()) and "default" not in text:
        text += f" (default {f.default})"
    return text.strip()


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, optional: Iterable[str] = ()) -> None:
    """Add one argument per field of `cls` to `parser`, in sections by the fields' `group`. Fields without a
    default are required arguments unless named in `optional` (then the spec's checks say what is missing).
    Defaults stay None in the namespace so that `from_namespace` can tell what was given."""
    groups: dict[str, Any] = {}
    keep_optional = set(optional)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        name = f.metadata.get("group", "")
        if name not in groups:
            groups[name] = parser.add_argument_group(name) if name else parser
        target = groups[name]
        kind = _kind(cls, f)
        kwargs: dict[str, Any] = {"dest": f.name, "help": _help(f), "default": None}
        if f.metadata.get("metavar"):
            kwargs["metavar"] = f.metadata["metavar"]
        if kind is bool and f.default is None:  # unset, on or off: --name / --no-name
            pair = target.add_mutually_exclusive_group()
            pair.add_argument(flag_of(f), action="store_true", **kwargs)
            off = f.metadata.get("off") or "--no-" + flag_of(f)[2:]
            pair.add_argument(off, dest=f.name, action="store_false", help=f.metadata.get("off_help", ""))
            continue
        if kind is bool:
            target.add_argument(flag_of(f), action="store_true", **kwargs)
            continue
        if typing.get_origin(kind) is tuple:
            kwargs["action"] = "append"
        else:
            kwargs["type"] = f.metadata.get("parse") or (kind if kind in (int, float) else str)
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if f.default is _MISSING and f.name not in keep_optional:
            kwargs["required"] = True
        target.add_argument(flag_of(f), **kwargs)


def from_namespace(cls: type[S], args: argparse.Namespace) -> S:
    """The spec from parsed arguments; arguments not given take the field's default."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
             if getattr(args, f.name, None) is not None}
    return from_dict(cls, given)


def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
    """The spec from a JSON object (a request body): unknown keys, missing required fields and values of
    the wrong type or outside their choices are a JobError naming the field."""
    if not isinstance(data, Mapping):
        raise JobError(f"a {cls.__name__} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise JobError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _checked(cls, f, data[name])
        elif f.default is _MISSING:
            raise JobError(f"{flag_of(f)} is required")
    return cls(**values)


def _checked(cls: type, f: dataclasses.Field[Any], value: Any) -> Any:
    kind = _kind(cls, f)
    flag = flag_of(f)
    if value is None:
        if f.default is None:
            return None
        raise JobError(f"{flag} needs a value")
    if typing.get_origin(kind) is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)) \
                or not all(isinstance(v, str) for v in value):
            raise JobError(f"{flag} takes a list of strings, got {value!r}")
        return tuple(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise JobError(f"{flag} is true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobError(f"{flag} must be a whole number, got {value!r}")
    elif kind is float:
        value = _float(flag, value)
    elif kind is str and not isinstance(value, str):
        raise JobError(f"{flag} must be a string, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise JobError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _float(flag: str, value: Any) -> float:
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JobError(f"{flag} must be a number, got {value!r}")
    return float(value)


def to_dict(spec: Any) -> dict[str, Any]:
    """The request body of `spec` (JSON-ready: tuples as lists, inf as "inf")."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(spec).items():
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, float) and math.isinf(value):
            value = "inf"
        out[key] = value
    return out

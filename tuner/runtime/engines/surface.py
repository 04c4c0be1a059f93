"""What one engine build accepts on its command line (its flag surface), and the checks of a flag mapping
against it: names (exact, alias or argparse's unique prefix), value types, choices, nargs and ranges.

A surface comes from the engine's own argparse parser (dumped as JSON, the shape of the SGLang 0.5.23
fixture shipped in data/), or, when that cannot be read, from its --help text (names only). Nothing here
runs a process; the launcher reads surfaces and caches them.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tuner.errors import TunerError

# argparse's `type=` names as the parser dump spells them -> the kind of value they take.
INT_TYPES = frozenset({"int", "human_readable_int"})
FLOAT_TYPES = frozenset({"float"})
JSON_TYPES = frozenset({"loads", "json_list_type"})
SWITCH_ACTIONS = frozenset({"_StoreTrueAction", "_StoreFalseAction", "DeprecatedStoreTrueAction",
                            "BooleanOptionalAction", "_StoreConstAction", "DeprecatedStoreConstAction"})
DEPRECATED_ACTIONS = frozenset({"DeprecatedStoreTrueAction", "DeprecatedStoreConstAction",
                                "DeprecatedAction", "DeprecatedAliasStoreAction"})


class UnknownFlagError(TunerError):
    """A flag the engine's parser does not list (a typo, or a flag a fork renamed)."""


class FlagValueError(TunerError):
    """A flag value the engine would refuse (type, choice, count or range), caught before any launch."""


@dataclass(frozen=True)
class FlagSpec:
    """One option string of an engine's parser. `name` and `primary` without dashes; `type` is argparse's
    type name ('int', 'float', 'str', 'loads', 'None' for switches); `nargs` as argparse has it."""

    name: str
    primary: str
    dest: str
    type: str = "str"
    choices: tuple[str, ...] | None = None
    nargs: int | str | None = None
    action: str = "_StoreAction"
    default: str | None = None

    @property
    def is_switch(self) -> bool:
        """A flag that takes no value (store_true and the like)."""
        return self.action in SWITCH_ACTIONS or self.nargs == 0

    @property
    def deprecated(self) -> bool:
        return self.action in DEPRECATED_ACTIONS

    @property
    def many(self) -> bool:
        return self.nargs in ("+", "*") or (isinstance(self.nargs, int) and self.nargs > 1)


@dataclass(frozen=True)
class FlagSurface:
    """Every option string an engine build accepts (aliases and --no- forms included), by name without
    dashes. `typed` is False for a surface read from --help text (names only: values are not checked)."""

    engine: str
    version: str | None
    specs: Mapping[str, FlagSpec]
    source: str = "parser"
    typed: bool = True
    allow_abbrev: bool = True  # argparse's default; SGLang keeps it, so unique prefixes are accepted
    notes: Mapping[str, str] = field(default_factory=dict)  # name -> why it is missing (e.g. fork-only)

    def names(self) -> set[str]:
        return set(self.specs)

    def label(self) -> str:
        return f"{self.engine} {self.version}" if self.version else self.engine

    def lookup(self, name: str) -> FlagSpec | None:
        """The spec `name` selects the way argparse would: exact spelling, else a unique prefix. Raises
        TunerError for an ambiguous prefix (argparse exits 2 on those)."""
        if name in self.specs:
            return self.specs[name]
        if not self.allow_abbrev:
            return None
        matches = sorted(n for n in self.specs if n.startswith(name))
        if len(matches) == 1:
            return self.specs[matches[0]]
        if len(matches) > 1:
            raise TunerError(
                f"--{name} is ambiguous for {self.label()} (it could be {', '.join('--' + m for m in matches)}); "
                "name the flag in full")
        return None

    def close_matches(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, sorted(self.specs), n=3, cutoff=0.6)


def _literal(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def surface_from_dump(data: Mapping[str, Any], *, engine: str, source: str = "parser") -> FlagSurface:
    """A parser dump {"version": V, "flags": {"--opt": {primary, dest, type, default, choices, nargs,
    action}}} (the shape of the SGLang fixture) -> FlagSurface. Raises TunerError on another shape."""
    flags = data.get("flags")
    if not isinstance(flags, Mapping) or not flags:
        raise TunerError(f"the {engine} parser dump has no 'flags' mapping")
    specs: dict[str, FlagSpec] = {}
    for option, row in flags.items():
        if not isinstance(row, Mapping) or not str(option).startswith("--"):
            continue
        choices = row.get("choices")
        nargs = row.get("nargs")
        specs[str(option)[2:]] = FlagSpec(
            name=str(option)[2:], primary=str(row.get("primary") or option).lstrip("-"),
            dest=str(row.get("dest") or ""), type=str(row.get("type")),
            choices=tuple(str(c) for c in choices) if isinstance(choices, list) else None,
            nargs=nargs if isinstance(nargs, (int, str)) else None,
            action=str(row.get("action") or "_StoreAction"),
            default=None if row.get("default") is None else str(row.get("default")))
    version = data.get("version")
    return FlagSurface(engine, str(version) if version else None, specs, source=source)


_HELP_FLAG = re.compile(r"(?<![\w-])--([A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9])")


def surface_from_help(help_text: str, *, engine: str, version: str | None = None) -> FlagSurface:
    """Names only, from an argparse --help text (every '--long-option' it mentions)."""
    names = {m.replace("_", "-") for m in _HELP_FLAG.findall(help_text)}
    specs = {n: FlagSpec(name=n, primary=n, dest=n.replace("-", "_"), type="unknown") for n in names}
    return FlagSurface(engine, version, specs, source="help", typed=False, allow_abbrev=False)


def bundled_surface(engine: str, version: str) -> FlagSurface:
    """A surface shipped with the tuner (data/<engine>-<version>.json); TunerError when there is none."""
    try:
        text = resources.files("tuner.runtime.engines").joinpath(f"data/{engine}-{version}.json").read_text()
    except (FileNotFoundError, OSError):
        raise TunerError(f"no bundled flag surface for {engine} {version}") from None
    return surface_from_dump(json.loads(text), engine=engine, source=f"bundled {engine} {version}")


def parser_dump(parser: Any, version: str | None = None) -> dict[str, Any]:
    """An argparse.ArgumentParser -> the dump surface_from_dump reads (every long option string)."""
    flags: dict[str, Any] = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.dest == "help":
            continue
        for option in longs:
            kind = action.type
            flags[option] = {
                "primary": longs[0], "dest": action.dest,
                "type": getattr(kind, "__name__", str(kind)),
                "default": repr(action.default), "nargs": action.nargs,
                "choices": [str(c) for c in action.choices] if action.choices is not None else None,
                "action": type(action).__name__,
            }
    return {"version": version, "flags": flags}


# ---- values -----------------------------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, str):
        try:
            int(value.strip())
            return True
        except ValueError:
            return bool(re.fullmatch(r"\s*\d+(\.\d+)?\s*[kKmMgG]\s*", value))
    return False


def _is_float(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value)
            return True
        except ValueError:
            return False
    return False


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class Range:
    """Values an engine accepts for a numeric flag: low..high (inclusive unless `open_low`/`open_high`),
    plus `also` (e.g. -1 for 'off'). Engines check these at startup, after parsing; we check them first."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    also: tuple[float, ...] = ()

    def allows(self, x: float) -> bool:
        if x in self.also:
            return True
        if self.low is not None and (x < self.low or (self.open_low and x == self.low)):
            return False
        return not (self.high is not None and (x > self.high or (self.open_high and x == self.high)))

    def describe(self) -> str:
        lo = "" if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        hi = "" if self.high is None else f"{'<' if self.open_high else '<='} {self.high:g}"
        text = " and ".join(t for t in (lo, hi) if t)
        return text + (f" (or {', '.join(f'{a:g}' for a in self.also)})" if self.also else "")


def value_problem(spec: FlagSpec, value: Any, ranges: Mapping[str, Range] | None = None) -> str | None:
    """Why `value` is not one the engine accepts for `spec` (None when it is). Types per the parser dump;
    ranges (by primary name) from the engine adapter, since parsers do not hold them."""
    flag = f"--{spec.name}"
    if value is None:
        return None
    if spec.is_switch:
        if isinstance(value, bool) or value in ("true", "false", "True", "False"):
            return None
        return f"{flag} is an on/off switch; give true or false, not {value!r}"
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not spec.many:
        return f"{flag} takes one value, not a list {list(value)!r}"
    if not values and spec.nargs == "+":
        return f"{flag} needs at least one value"
    for v in values:
        if spec.type in INT_TYPES and not _is_int(v):
            return f"{flag} takes an integer, not {v!r}"
        if spec.type in FLOAT_TYPES and not _is_float(v):
            return f"{flag} takes a number, not {v!r}"
        if spec.type in JSON_TYPES and not isinstance(v, (Mapping, list)):
            try:
                json.loads(str(v))
            except ValueError:
                return f"{flag} takes JSON, not {v!r}"
        if spec.choices is not None and str(v) not in spec.choices:
            shown = ", ".join(spec.choices[:12]) + (", ..." if len(spec.choices) > 12 else "")
            return f"{flag} must be one of {shown}; {v!r} is not"
        limits = (ranges or {}).get(spec.primary)
        x = _number(v)
        if limits is not None and x is not None and not limits.allows(x):
            return f"{flag} must be {limits.describe()}; {v!r} is not"
    return None



# ---- knobs: one setting under each version's spelling -----------------------------------------------------

@dataclass(frozen=True)
class Knob:
    """One setting that engine versions spell differently, every spelling oldest first, e.g.
    ("cuda-graph-max-bs", "cuda-graph-max-bs-decode"). Any spelling is accepted as input; the one the
    installed engine has is written."""

    spellings: tuple[str, ...]


# A deprecated flag whose current form is other flags: (value, all flags given, surface) -> replacement flags,
# None when the surface still takes the flag as it is (an older engine), or a one-line problem.
Rewrite = Callable[[Any, Mapping[str, Any], FlagSurface], "dict[str, Any] | str | None"]


def _head(key: str) -> tuple[str, str]:
    name = key.strip().lstrip("-").replace("_", "-")
    head, dot, tail = name.partition(".")
    return head, (dot + tail.replace("-", "_") if dot else "")


def map_flags(flags: Mapping[str, Any], surface: FlagSurface, *, knobs: Sequence[Knob] = (),
              rewrites: Mapping[str, Rewrite] | None = None, ranges: Mapping[str, Range] | None = None,
              ) -> dict[str, Any]:
    """Flags named by knob, seed-era or current spelling -> the same settings in `surface`'s spelling
    (its primary option names), in the given order. Raises UnknownFlagError for names the surface does not
    take (with close matches, and why, e.g. fork-only) and FlagValueError for values it would refuse; each
    problem once, all in one message."""
    by_spelling = {s: k for k in knobs for s in k.spellings}
    unknown: list[str] = []
    bad: list[str] = []
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def put(name: str, value: Any, given: str) -> None:
        if name in out and origin[name] != given:
            bad.append(f"--{given} and --{origin[name]} set the same flag --{name} of {surface.label()}; keep one")
            return
        out[name], origin[name] = value, given

    for raw_key, value in flags.items():
        head, tail = _head(str(raw_key))
        rewrite = (rewrites or {}).get(head)
        if rewrite is not None:
            replaced = rewrite(value, flags, surface)
            if isinstance(replaced, str):
                bad.append(replaced)
                continue
            if replaced is not None:
                for name, new_value in replaced.items():
                    put(name, new_value, head)
                continue
        name = head
        knob = by_spelling.get(head)
        if knob is not None and head not in surface.specs:
            have = [s for s in reversed(knob.spellings) if s in surface.specs]
            if have:
                name = have[0]
        try:
            spec = surface.lookup(name)
        except TunerError as exc:
            unknown.append(str(exc))
            continue
        if spec is None:
            close = surface.close_matches(name)
            why = surface.notes.get(name)
            hint = f" ({why})" if why else (f" (did you mean {', '.join('--' + c for c in close)}?)"
                                             if close else "")
            unknown.append(f"--{head}{hint}")
            continue
        if surface.typed and not tail:
            problem = value_problem(spec, value, ranges)
            if problem:
                bad.append(problem)
                continue
        # aliases are written as the primary name; --x / --no-x pairs keep the form given
        primary = spec.primary if surface.typed and spec.action != "BooleanOptionalAction" else spec.name
        put(primary + tail, value, head)
    if unknown:
        raise UnknownFlagError(
            f"{surface.label()} does not accept flag(s) " + "; ".join(dict.fromkeys(unknown))
            + ". Check the spelling against the engine's --help (forks rename flags).")
    if bad:
        raise FlagValueError(f"invalid flag value(s) for {surface.label()}: " + "; ".join(dict.fromkeys(bad)))
    return out

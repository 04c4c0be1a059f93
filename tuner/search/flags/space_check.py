"""A search space (parameters, base flags, base environment) and the checks that reject one that cannot be
searched before any launch, each problem with what to change.

It applies the coupling rules' whole-space checks (coupling.py); it builds no candidates (space.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tuner.runtime.engines.base import RESERVED_FLAGS, Engine, normalize_flag, validate_flags
from tuner.runtime.engines.surface import FlagSurface, FlagValueError, UnknownFlagError
from tuner.search.flags.coupling import implied_conditions, static_problems
from tuner.search.flags.params import InvalidSpaceError, Param, round_float, same_value


@dataclass(frozen=True)
class SearchSpace:
    """Parameters in suggestion order (a parameter comes after those its `when` names), base flags and
    base environment. `family` picks the coupling rules: 'sglang' (SGLang and the simulator) or 'vllm'."""

    params: tuple[Param, ...]
    base_flags: Mapping[str, Any] = field(default_factory=dict)
    base_env: Mapping[str, str] = field(default_factory=dict)
    family: str = "sglang"
    name: str = "custom"
    notes: tuple[str, ...] = ()

    def param(self, key: str) -> Param | None:
        for p in self.params:
            if p.key == key:
                return p
        return None

    def flag_names(self) -> list[str]:
        """Every engine flag this space can set (base flags and flag parameters)."""
        names = list(self.base_flags) + [p.name for p in self.params if not p.env]
        return list(dict.fromkeys(names))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "family": self.family,
            "base_flags": dict(self.base_flags), "base_env": dict(self.base_env),
            "params": [p.describe() for p in self.params], "notes": list(self.notes),
        }

    def with_base(self, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                  ) -> SearchSpace:
        """The space with extra fixed flags/environment (e.g. --base-flag tp-size=8); checked again."""
        merged_flags = {**self.base_flags, **{normalize_flag(k): v for k, v in (flags or {}).items()}}
        merged_env = {**self.base_env, **{str(k): str(v) for k, v in (env or {}).items()}}
        return check_space(replace(self, base_flags=merged_flags, base_env=merged_env))


def _choice_problems(p: Param) -> list[str]:
    """A categorical parameter: some choices, each a plain value, none twice, more than one."""
    k = p.key
    problems: list[str] = []
    if not p.choices:
        problems.append(f"{k}: categorical parameter with no choices")
    for c in p.choices:
        if c is not None and not isinstance(c, (bool, int, float, str)):
            problems.append(f"{k}: choice {c!r} is not a number, string, boolean or null")
    seen: list[Any] = []
    for c in p.choices:
        if any(same_value(c, s) or (c is None and s is None) for s in seen):
            problems.append(f"{k}: choice {c!r} is listed twice")
        seen.append(c)
    if len(p.choices) == 1:
        problems.append(f"{k}: only one choice ({p.choices[0]!r}); make it a base flag instead")
    return problems


def _step_problems(p: Param, low: float, high: float, step: float) -> list[str]:
    """A stepped range: a positive step (whole for ints, none for log scales) that divides high - low."""
    k = p.key
    if step <= 0:
        return [f"{k}: step must be positive (got {step})"]
    problems: list[str] = []
    if p.kind == "int" and step != int(step):
        problems.append(f"{k}: an int step must be a whole number (got {step})")
    if p.log and (p.kind == "float" or step != 1):
        problems.append(f"{k}: a log-scaled parameter cannot have a step (Optuna samples it continuously)")
    span = (high - low) / step
    if abs(span - round(span)) > 1e-6:
        fixed = low + math.floor(span + 1e-9) * step
        problems.append(f"{k}: (high - low) = {high - low:g} is not a multiple of step {step:g}; "
                        f"use high: {round_float(fixed, step):g}")
    return problems


def _range_problems(p: Param) -> list[str]:
    """A numeric parameter: low below high, whole bounds for ints, positive for log scales, its step."""
    assert p.low is not None and p.high is not None
    k = p.key
    if not p.low < p.high:
        return [f"{k}: low ({p.low}) must be below high ({p.high})"]
    problems: list[str] = []
    if p.kind == "int" and (p.low != int(p.low) or p.high != int(p.high)):
        problems.append(f"{k}: int bounds must be whole numbers (got {p.low}, {p.high})")
    if p.log and p.low <= 0:
        problems.append(f"{k}: a log-scaled parameter needs low > 0 (got {p.low})")
    if p.step is not None:
        problems += _step_problems(p, p.low, p.high, p.step)
    return problems


def _check_param(p: Param) -> list[str]:
    return _choice_problems(p) if p.kind == "categorical" else _range_problems(p)


def _order_params(params: Sequence[Param]) -> tuple[list[Param], list[str]]:
    """Parameters so that each comes after those its `when` names; problems for unknown names or cycles."""
    by_key = {p.key: p for p in params}
    problems: list[str] = []
    for p in params:
        for name, values in p.when:
            target = by_key.get(name)
            if target is None:
                problems.append(f"{p.key}: 'when' names {name!r}, which is not a searched parameter")
                continue
            if target.kind != "categorical" and not target.is_discrete():
                problems.append(f"{p.key}: 'when' needs {name!r} to be categorical or integer")
                continue
            for v in values:
                if not target.contains(v) and not (v is None and target.kind == "categorical"
                                                    and None in target.choices):
                    problems.append(f"{p.key}: 'when' value {v!r} of {name!r} is outside its domain")
    ordered: list[Param] = []
    state: dict[str, int] = {}

    def visit(p: Param, chain: tuple[str, ...]) -> None:
        if state.get(p.key) == 2:
            return
        if state.get(p.key) == 1:
            problems.append("conditions form a cycle: " + " -> ".join(chain + (p.key,)))
            return
        state[p.key] = 1
        for name, _ in p.when:
            if name in by_key:
                visit(by_key[name], chain + (p.key,))
        state[p.key] = 2
        ordered.append(p)

    for p in params:
        visit(p, ())
    return ordered, problems


def check_space(space: SearchSpace) -> SearchSpace:
    """Reject a space that cannot be searched (every problem listed); return it with the conditions the
    coupling rules imply added, in suggestion order."""
    problems: list[str] = []
    keys = [p.key for p in space.params]
    for key in dict.fromkeys(k for k in keys if keys.count(k) > 1):
        problems.append(f"{key}: defined twice")
    for p in space.params:
        problems += _check_param(p)
        if not p.env and p.name in RESERVED_FLAGS:
            problems.append(f"--{p.name} is set by the tuner itself and cannot be searched")
        if not p.env and p.name in space.base_flags:
            problems.append(f"--{p.name} is both searched and fixed in the base flags; drop one")
        if p.env and p.name in space.base_env:
            problems.append(f"environment variable {p.name} is both searched and fixed in base_env; drop one")
    for flag in space.base_flags:
        if normalize_flag(flag) in RESERVED_FLAGS:
            problems.append(f"--{normalize_flag(flag)} is set by the tuner itself; remove it from the base flags")
    if not space.params:
        problems.append("the space has no parameters to search")
    if problems:
        raise InvalidSpaceError("invalid search space:\n  - " + "\n  - ".join(problems))
    params, notes = implied_conditions(space.family, space.params, space.base_flags)
    space = replace(space, params=tuple(params), notes=tuple(dict.fromkeys(space.notes + tuple(notes))))
    ordered, order_problems = _order_params(space.params)
    problems += order_problems
    problems += static_problems(space.family, space.params, space.base_flags, space.base_env)
    if problems:
        raise InvalidSpaceError("invalid search space:\n  - " + "\n  - ".join(dict.fromkeys(problems)))
    return replace(space, params=tuple(ordered))


def check_supported(space: SearchSpace, supported: set[str]) -> None:
    """Raise UnknownFlagError when the engine's --help does not list a flag the space can set."""
    validate_flags(dict.fromkeys(space.flag_names()), supported)


def param_values(p: Param) -> list[Any]:
    """The values of a parameter that bound what it can suggest: every choice, or low and high."""
    if p.choices:
        return list(p.choices)
    return [v for v in (p.low, p.high) if v is not None]


def check_engine_accepts(space: SearchSpace, engine: Engine, surface: FlagSurface) -> None:
    """Every flag the space can set, under the name and with every value bound it can suggest, is one the
    installed engine takes (knobs mapped to its spelling by the engine adapter). Raises UnknownFlagError or
    FlagValueError naming each problem once, before any launch."""
    engine.map_flags(dict(space.base_flags), surface)
    unknown: list[str] = []
    bad: list[str] = []
    for p in space.params:
        if p.env:
            continue
        for value in param_values(p) or [None]:
            try:
                engine.map_flags({**space.base_flags, p.name: value}, surface)
            except UnknownFlagError as exc:
                unknown.append(str(exc))
                break
            except FlagValueError as exc:
                bad.append(f"parameter {p.key}: {exc}")
    if unknown:
        raise UnknownFlagError("; ".join(dict.fromkeys(unknown)))
    if bad:
        raise FlagValueError("; ".join(dict.fromkeys(bad)))

"""The pieces a flag search space is made of: a searched parameter (`Param`, an engine flag or environment
variable), a `Candidate` to launch, and reading one parameter from its YAML mapping.

Data and parsing only: checking whole spaces is space_check.py's job, coupling rules coupling.py's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuner.errors import TunerError
from tuner.runtime.engines.base import normalize_flag

PARAM_KINDS = ("int", "float", "categorical")
ENV_PREFIX = "env:"


class InvalidSpaceError(TunerError):
    """A search space that cannot be searched: every problem found is listed with what to change."""


@dataclass(frozen=True)
class Param:
    """One searched knob. `name` is the flag without dashes (`chunked-prefill-size`) or, with env=True, an
    environment variable. `when` makes it active only while each named parameter has one of the listed
    values. `memory` is +1 when larger values need more GPU memory (crash learning), -1 the reverse, 0 none.
    A categorical choice of None leaves the flag unset (the engine's default)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    env: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    memory: int | None = None  # None: the built-in table of feasibility.py decides

    @property
    def key(self) -> str:
        """The name Optuna and the database know this parameter by."""
        return ENV_PREFIX + self.name if self.env else self.name

    def is_discrete(self) -> bool:
        return self.kind != "float" or self.step is not None

    def values(self) -> list[Any]:
        """Every value of a discrete parameter (ints and stepped floats enumerated)."""
        if self.kind == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise InvalidSpaceError(f"parameter {self.key} is a continuous float: give it a step to enumerate it")
        n = round((self.high - self.low) / self.step)
        return [round_float(self.low + i * self.step, self.step) for i in range(n + 1)]

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(same_value(value, c) for c in self.choices)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        assert self.low is not None and self.high is not None
        return self.low - 1e-9 <= value <= self.high + 1e-9

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        if self.env:
            out["env"] = True
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when}
        if self.memory is not None:
            out["memory"] = {1: "up", -1: "down", 0: "none"}[self.memory]
        return out


def same_value(a: Any, b: Any) -> bool:
    # 1 == True in Python; a choice list [true, 1] must keep them apart
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b
    )


def round_float(value: float, step: float | None) -> float:
    """Strip float noise (0.8800000000000001) to the precision the step implies."""
    if step is None or step <= 0:
        return float(f"{value:.6g}")
    decimals = max(0, -math.floor(math.log10(step))) + 2
    return round(value, decimals)


@dataclass(frozen=True)
class Candidate:
    """One configuration to launch: the parameter values the sampler chose, the full flags (base flags,
    parameters and what coupling rules derived) and environment variables."""

    params: Mapping[str, Any]
    flags: Mapping[str, Any]
    env: Mapping[str, str]
    notes: tuple[str, ...] = ()
    is_baseline: bool = False

    @property
    def key(self) -> str:
        """Canonical identity: two candidates with the same key launch the same engine."""
        return json.dumps({"flags": _sorted(self.flags), "env": _sorted(self.env)}, sort_keys=True,
                          default=str)

    def display(self) -> str:
        parts = [f"{k}={_show(v)}" for k, v in self.params.items()]
        return "baseline (engine defaults)" if self.is_baseline else (" ".join(parts) or "(no parameters)")


def _sorted(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(m.items())}


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ----------------------------------------------------------------------------------------------------
# Reading parameters

_PARAM_KEYS = frozenset({"name", "type", "low", "high", "step", "log", "choices", "env", "when", "memory"})
_MEMORY = {"up": 1, "down": -1, "none": 0}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_mapping(data: Any, known: frozenset[str], *, not_mapping: str, subject: str) -> None:
    """Raise InvalidSpaceError (`not_mapping`) unless `data` is a mapping, or naming the keys outside `known`
    ("`subject` unknown key(s) ...; allowed: ...")."""
    if not isinstance(data, Mapping):
        raise InvalidSpaceError(not_mapping)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidSpaceError(f"{subject} unknown key(s) {', '.join(unknown)}; allowed: "
                                f"{', '.join(sorted(known))}")


def _param_kind(name: str, spec: Mapping[str, Any], where: str) -> str:
    """The parameter's type, after checking the mapping's keys."""
    check_mapping(spec, _PARAM_KEYS, subject=f"{where}: parameter {name!r} has",
                  not_mapping=f"{where}: parameter {name!r} must be a mapping with a type, got {spec!r}")
    kind = str(spec.get("type", "categorical" if "choices" in spec else "")).lower()
    if kind not in PARAM_KINDS:
        raise InvalidSpaceError(f"{where}: parameter {name!r} needs type int, float or categorical "
                                f"(got {spec.get('type')!r})")
    return kind


def _when(name: str, spec: Mapping[str, Any], where: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    when_spec = spec.get("when") or {}
    if not isinstance(when_spec, Mapping):
        raise InvalidSpaceError(f"{where}: 'when' of {name!r} must map parameter names to value lists")
    return tuple((param_key(str(k)), tuple(v) if isinstance(v, (list, tuple)) else (v,))
                 for k, v in when_spec.items())


def _memory(name: str, spec: Mapping[str, Any], where: str) -> int | None:
    text = spec.get("memory")
    if text is None:
        return None
    memory = _MEMORY.get(str(text).lower())
    if memory is None:
        raise InvalidSpaceError(f"{where}: 'memory' of {name!r} must be up, down or none")
    return memory


def _choices(name: str, spec: Mapping[str, Any], where: str, env: bool) -> tuple[Any, ...]:
    choices = spec.get("choices")
    if not isinstance(choices, (list, tuple)):
        raise InvalidSpaceError(f"{where}: categorical parameter {name!r} needs a list of choices")
    return tuple(None if c is None else env_str(c) for c in choices) if env else tuple(choices)


def _check_range(name: str, kind: str, spec: Mapping[str, Any], where: str, env: bool) -> None:
    """A numeric parameter's bounds and step are numbers, and it is not an environment variable."""
    for bound in ("low", "high"):
        if not _is_number(spec.get(bound)):
            raise InvalidSpaceError(f"{where}: {kind} parameter {name!r} needs a numeric {bound!r}")
    step = spec.get("step")
    if step is not None and not _is_number(step):
        raise InvalidSpaceError(f"{where}: 'step' of {name!r} must be a number")
    if env:
        raise InvalidSpaceError(f"{where}: environment variable {name!r} must be categorical (its values are "
                                "strings), e.g. choices: ['0', '1']")


def param_from_mapping(name: str, spec: Mapping[str, Any], where: str) -> Param:
    """One parameter from its YAML mapping (`type`, `low`/`high`/`step`/`log` or `choices`, `env`, `when`,
    `memory`)."""
    kind = _param_kind(name, spec, where)
    env = bool(spec.get("env", False))
    when = _when(name, spec, where)
    memory = _memory(name, spec, where)
    clean_name = name.strip() if env else normalize_flag(name)
    if kind == "categorical":
        return Param(clean_name, kind, choices=_choices(name, spec, where, env), env=env, when=when,
                     memory=memory)
    _check_range(name, kind, spec, where, env)
    return Param(clean_name, kind, low=spec["low"], high=spec["high"], step=spec.get("step"),
                 log=bool(spec.get("log", False)), env=env, when=when, memory=memory)


def env_str(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def param_key(name: str) -> str:
    if name.startswith(ENV_PREFIX):
        return ENV_PREFIX + name[len(ENV_PREFIX):].strip()
    return normalize_flag(name)


def params_from(data: Any, where: str, *, env: bool = False) -> list[Param]:
    """Parameters from a list of mappings with `name`, or a mapping name -> spec; env=True makes every one
    an environment variable."""
    if data is None:
        return []

    def spec_of(v: Any) -> Any:
        return {**v, "env": True} if env and isinstance(v, Mapping) else v

    if isinstance(data, Mapping):
        return [param_from_mapping(str(k), spec_of(v), where) for k, v in data.items()]
    if isinstance(data, list):
        out = []
        for item in data:
            if not isinstance(item, Mapping) or "name" not in item:
                raise InvalidSpaceError(f"{where}: each entry of 'params' needs a 'name', got {item!r}")
            out.append(param_from_mapping(str(item["name"]), spec_of(item), where))
        return out
    raise InvalidSpaceError(f"{where}: 'params' must be a list or a mapping")

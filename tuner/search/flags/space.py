"""The search space of server flags: parameters (int, float, categorical; engine flags or environment
variables), fixed base flags, conditions, YAML files and the checks that reject a bad space before any launch.

It turns parameter values into a `Candidate` (flags + environment) through the engine's coupling rules
(coupling.py); it never launches anything. Built-in spaces are in presets.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TunerError
from tuner.runtime.engines.base import RESERVED_FLAGS, normalize_flag, validate_flags

PARAM_KINDS = ("int", "float", "categorical")
ENV_PREFIX = "env:"
MAX_GRID_POINTS = 100_000


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
            return any(_same(value, c) for c in self.choices)
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


def _same(a: Any, b: Any) -> bool:
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


# ----------------------------------------------------------------------------------------------------
# Reading spaces

def param_from_mapping(name: str, spec: Mapping[str, Any], where: str) -> Param:
    """One parameter from its YAML mapping (`type`, `low`/`high`/`step`/`log` or `choices`, `env`, `when`,
    `memory`)."""
    if not isinstance(spec, Mapping):
        raise InvalidSpaceError(f"{where}: parameter {name!r} must be a mapping with a type, got {spec!r}")
    known = {"name", "type", "low", "high", "step", "log", "choices", "env", "when", "memory"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise InvalidSpaceError(f"{where}: parameter {name!r} has unknown key(s) {', '.join(unknown)}; "
                                f"allowed: {', '.join(sorted(known))}")
    kind = str(spec.get("type", "categorical" if "choices" in spec else "")).lower()
    if kind not in PARAM_KINDS:
        raise InvalidSpaceError(f"{where}: parameter {name!r} needs type int, float or categorical "
                                f"(got {spec.get('type')!r})")
    env = bool(spec.get("env", False))
    when_spec = spec.get("when") or {}
    if not isinstance(when_spec, Mapping):
        raise InvalidSpaceError(f"{where}: 'when' of {name!r} must map parameter names to value lists")
    when = tuple(
        (_param_key(str(k)), tuple(v) if isinstance(v, (list, tuple)) else (v,))
        for k, v in when_spec.items()
    )
    memory_text = spec.get("memory")
    memory = None
    if memory_text is not None:
        memory = {"up": 1, "down": -1, "none": 0}.get(str(memory_text).lower())
        if memory is None:
            raise InvalidSpaceError(f"{where}: 'memory' of {name!r} must be up, down or none")
    clean_name = name.strip() if env else normalize_flag(name)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)):
            raise InvalidSpaceError(f"{where}: categorical parameter {name!r} needs a list of choices")
        if env:
            choices = [None if c is None else _env_str(c) for c in choices]
        return Param(clean_name, kind, choices=tuple(choices), env=env, when=when, memory=memory)
    for bound in ("low", "high"):
        if not isinstance(spec.get(bound), (int, float)) or isinstance(spec.get(bound), bool):
            raise InvalidSpaceError(f"{where}: {kind} parameter {name!r} needs a numeric {bound!r}")
    step = spec.get("step")
    if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool)):
        raise InvalidSpaceError(f"{where}: 'step' of {name!r} must be a number")
    if env:
        raise InvalidSpaceError(f"{where}: environment variable {name!r} must be categorical (its values are "
                                "strings), e.g. choices: ['0', '1']")
    return Param(clean_name, kind, low=spec["low"], high=spec["high"], step=step,
                 log=bool(spec.get("log", False)), env=env, when=when, memory=memory)


def _env_str(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _param_key(name: str) -> str:
    if name.startswith(ENV_PREFIX):
        return ENV_PREFIX + name[len(ENV_PREFIX):].strip()
    return normalize_flag(name)


def _params_from(data: Any, where: str, *, env: bool = False) -> list[Param]:
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


def space_from_mapping(data: Mapping[str, Any], where: str = "<space>") -> SearchSpace:
    """A space from parsed YAML: `preset`, `engine`, `base_flags`, `base_env`, `params`, `env` (environment
    parameters), `remove` (preset parameters to drop)."""
    from tuner.search.flags.presets import preset_space

    if not isinstance(data, Mapping):
        raise InvalidSpaceError(f"{where}: a space file must hold a mapping (params, base_flags, ...)")
    known = {"preset", "engine", "base_flags", "base_env", "params", "env", "remove", "name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidSpaceError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                                f"{', '.join(sorted(known))}")
    params: list[Param] = []
    base_flags: dict[str, Any] = {}
    base_env: dict[str, str] = {}
    family = "sglang"
    if data.get("preset"):
        preset = preset_space(str(data["preset"]), checked=False)
        params, base_flags, base_env, family = (list(preset.params), dict(preset.base_flags),
                                                dict(preset.base_env), preset.family)
    if data.get("engine"):
        family = "vllm" if str(data["engine"]).lower() == "vllm" else "sglang"
    for key in data.get("remove") or []:
        wanted = _param_key(str(key))
        if not any(p.key == wanted for p in params):
            raise InvalidSpaceError(f"{where}: 'remove' names {key!r}, which the preset does not search")
        params = [p for p in params if p.key != wanted]
    new = _params_from(data.get("params"), where)
    env_params = _params_from(data.get("env"), where, env=True)
    for p in new + env_params:
        params = [q for q in params if q.key != p.key] + [p]  # a file's parameter replaces the preset's
    flags = data.get("base_flags") or {}
    env = data.get("base_env") or {}
    if not isinstance(flags, Mapping) or not isinstance(env, Mapping):
        raise InvalidSpaceError(f"{where}: base_flags and base_env must be mappings")
    base_flags.update({normalize_flag(str(k)): v for k, v in flags.items()})
    base_env.update({str(k): _env_str(v) for k, v in env.items()})
    return check_space(SearchSpace(tuple(params), base_flags, base_env, family,
                                   name=str(data.get("name") or data.get("preset") or "custom")))


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a YAML space file; every problem is an InvalidSpaceError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidSpaceError(f"cannot read the space file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpaceError(f"{path} is not valid YAML: {exc}") from None
    space = space_from_mapping(data or {}, str(path))
    return replace(space, name=space.name if space.name != "custom" else path.stem)


# ----------------------------------------------------------------------------------------------------
# Checking spaces

def _check_param(p: Param) -> list[str]:
    problems: list[str] = []
    k = p.key
    if p.kind == "categorical":
        if not p.choices:
            problems.append(f"{k}: categorical parameter with no choices")
        for c in p.choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                problems.append(f"{k}: choice {c!r} is not a number, string, boolean or null")
        seen: list[Any] = []
        for c in p.choices:
            if any(_same(c, s) or (c is None and s is None) for s in seen):
                problems.append(f"{k}: choice {c!r} is listed twice")
            seen.append(c)
        if len(p.choices) == 1:
            problems.append(f"{k}: only one choice ({p.choices[0]!r}); make it a base flag instead")
        return problems
    assert p.low is not None and p.high is not None
    if not p.low < p.high:
        problems.append(f"{k}: low ({p.low}) must be below high ({p.high})")
        return problems
    if p.kind == "int" and (p.low != int(p.low) or p.high != int(p.high)):
        problems.append(f"{k}: int bounds must be whole numbers (got {p.low}, {p.high})")
    if p.log and p.low <= 0:
        problems.append(f"{k}: a log-scaled parameter needs low > 0 (got {p.low})")
    if p.step is not None:
        if p.step <= 0:
            problems.append(f"{k}: step must be positive (got {p.step})")
            return problems
        if p.kind == "int" and p.step != int(p.step):
            problems.append(f"{k}: an int step must be a whole number (got {p.step})")
        if p.log and (p.kind == "float" or p.step != 1):
            problems.append(f"{k}: a log-scaled parameter cannot have a step (Optuna samples it continuously)")
        span = (p.high - p.low) / p.step
        if abs(span - round(span)) > 1e-6:
            fixed = p.low + math.floor(span + 1e-9) * p.step
            problems.append(f"{k}: (high - low) = {p.high - p.low:g} is not a multiple of step {p.step:g}; "
                            f"use high: {round_float(fixed, p.step):g}")
    return problems


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
    from tuner.search.flags.coupling import implied_conditions, static_problems

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
    params, notes = implied_conditions(space)
    space = replace(space, params=tuple(params), notes=tuple(dict.fromkeys(space.notes + tuple(notes))))
    ordered, order_problems = _order_params(space.params)
    problems += order_problems
    problems += static_problems(space)
    if problems:
        raise InvalidSpaceError("invalid search space:\n  - " + "\n  - ".join(dict.fromkeys(problems)))
    return replace(space, params=tuple(ordered))


def check_supported(space: SearchSpace, supported: set[str]) -> None:
    """Raise UnknownFlagError when the engine's --help does not list a flag the space can set."""
    validate_flags(dict.fromkeys(space.flag_names()), supported)


# ----------------------------------------------------------------------------------------------------
# Values -> candidates

def active(p: Param, values: Mapping[str, Any]) -> bool:
    """Whether `p` is in play given the values chosen so far (a `when` on an inactive parameter is false)."""
    for name, allowed in p.when:
        if name not in values:
            return False
        if not any(_same(values[name], a) or (values[name] is None and a is None) for a in allowed):
            return False
    return True


def candidate_from_values(space: SearchSpace, values: Mapping[str, Any]) -> Candidate:
    """The candidate for parameter values (inactive parameters are ignored; missing active ones are an
    error), through the coupling rules."""
    chosen: dict[str, Any] = {}
    for p in space.params:
        if not active(p, chosen):
            continue
        if p.key not in values:
            raise TunerError(f"no value for parameter {p.key}")
        value = values[p.key]
        if not p.contains(value) and not (value is None and p.kind == "categorical" and None in p.choices):
            raise TunerError(f"value {value!r} of {p.key} is outside its domain")
        chosen[p.key] = round_float(value, p.step) if p.kind == "float" else value
    return _build(space, chosen)


def _build(space: SearchSpace, chosen: Mapping[str, Any], is_baseline: bool = False) -> Candidate:
    from tuner.search.flags.coupling import apply_coupling

    flags = dict(space.base_flags)
    env = dict(space.base_env)
    for key, value in chosen.items():
        if key.startswith(ENV_PREFIX):
            if value is not None:
                env[key[len(ENV_PREFIX):]] = str(value)
        elif value is not None:
            flags[key] = value
    flags, env, notes = apply_coupling(space.family, flags, env)
    return Candidate(params=dict(chosen), flags=flags, env=env, notes=tuple(notes), is_baseline=is_baseline)


def baseline_candidate(space: SearchSpace) -> Candidate:
    """The engine's defaults plus the base flags: trial 0, what every result is compared with."""
    return _build(space, {}, is_baseline=True)


def suggest(space: SearchSpace, trial: Any) -> Candidate:
    """Ask an Optuna trial for a value of every active parameter (define-by-run, so conditional parameters
    are only sampled when active) and build the candidate."""
    chosen: dict[str, Any] = {}
    for p in space.params:
        if not active(p, chosen):
            continue
        if p.kind == "categorical":
            value = trial.suggest_categorical(p.key, list(p.choices))
        elif p.kind == "int":
            assert p.low is not None and p.high is not None
            value = trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            assert p.low is not None and p.high is not None
            value = round_float(trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log), p.step)
        chosen[p.key] = value
    return _build(space, chosen)


def grid(space: SearchSpace) -> Iterator[Candidate]:
    """Every distinct candidate of a discrete space (conditions respected; coupling may merge some)."""
    size = 1
    for p in space.params:
        size *= max(1, len(p.values()))
        if size > MAX_GRID_POINTS:
            raise InvalidSpaceError(f"the space has more than {MAX_GRID_POINTS} points; discretise it more")
    seen: set[str] = set()

    def walk(i: int, chosen: dict[str, Any]) -> Iterator[Candidate]:
        if i == len(space.params):
            cand = _build(space, chosen)
            if cand.key not in seen:
                seen.add(cand.key)
                yield cand
            return
        p = space.params[i]
        if not active(p, chosen):
            yield from walk(i + 1, chosen)
            return
        for v in p.values():
            yield from walk(i + 1, {**chosen, p.key: v})

    yield from walk(0, {})


# ----------------------------------------------------------------------------------------------------
# Neighbourhoods (local search around the best config so far)

NEIGHBOUR_STEPS = (1, 2, 4)  # in index steps of a long discrete range (each way)
MAX_ALL_VALUES = 8  # a discrete parameter with at most this many values offers all of them


def neighbour_values(p: Param, value: Any) -> list[Any]:
    """Values of `p` near `value`: every other choice of a short domain, a few steps each way of a long one,
    and +-5/10/20% of the range of a continuous float."""
    if p.kind == "categorical":
        return [c for c in p.choices if not (_same(c, value) or (c is None and value is None))]
    assert p.low is not None and p.high is not None
    if p.kind == "float" and p.step is None:
        span = p.high - p.low
        out = []
        for f in (0.05, 0.1, 0.2):
            for sign in (-1, 1):
                v = round_float(min(p.high, max(p.low, value + sign * f * span)), None)
                if v != value and v not in out:
                    out.append(v)
        return out
    if p.kind == "int" and p.log:
        out = []
        for f in (2 ** 0.25, 2 ** 0.5, 2.0):
            for v in (round(value * f), round(value / f)):
                v = min(int(p.high), max(int(p.low), v))
                if v != value and v not in out:
                    out.append(v)
        return out
    values = p.values()
    if len(values) <= MAX_ALL_VALUES:
        return [v for v in values if v != value]
    i = min(range(len(values)), key=lambda k: abs(values[k] - value))
    picks = {i + s * d for s in NEIGHBOUR_STEPS for d in (-1, 1)}
    return [values[k] for k in sorted(picks) if 0 <= k < len(values) and k != i]


def _middle(p: Param) -> Any:
    if p.kind == "categorical":
        choices = [c for c in p.choices if c is not None] or list(p.choices)
        return choices[len(choices) // 2]
    assert p.low is not None and p.high is not None
    if p.is_discrete():
        values = p.values()
        return values[len(values) // 2]
    return round_float((p.low + p.high) / 2, None)


def neighbours(space: SearchSpace, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Parameter sets differing from `params` in one parameter (newly active conditional parameters get the
    middle of their domain, inactive ones are dropped), in parameter order."""
    out: list[dict[str, Any]] = []
    for p in space.params:
        if p.key in params:
            out += [complete_values(space, {**params, p.key: v}) for v in neighbour_values(p, params[p.key])]
    return out


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _distance(p: Param, a: Any, b: Any) -> float:
    """How far apart two values of `p` are: by ratio for log-scaled and numeric choices, by difference for
    other numbers, by position in the list for other choices."""
    if _number(a) and _number(b):
        if (p.log or p.kind == "categorical") and a > 0 and b > 0:
            return abs(math.log(a) - math.log(b))
        return abs(float(a) - float(b))
    values = p.values()
    ia = next((i for i, c in enumerate(values) if _same(c, a) or (c is None and a is None)), 0)
    ib = next((i for i, c in enumerate(values) if _same(c, b) or (c is None and b is None)), 0)
    return abs(ia - ib)


def ordered_neighbour_values(p: Param, value: Any) -> list[Any]:
    """neighbour_values, nearest first."""
    return sorted(neighbour_values(p, value), key=lambda v: _distance(p, v, value))


def complete_values(space: SearchSpace, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` restricted to the parameters active under them; newly active ones get their middle value."""
    chosen: dict[str, Any] = {}
    for q in space.params:
        if active(q, chosen):
            chosen[q.key] = values[q.key] if q.key in values else _middle(q)
    return chosen


def nearest_values(space: SearchSpace, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The point of the space nearest to an engine's resolved arguments (e.g. /server_info of the baseline:
    `chunked_prefill_size` 8192, `cuda_graph_max_bs` 512, ...). Unknown flags get their middle value."""
    chosen: dict[str, Any] = {}
    for p in space.params:
        if not active(p, chosen):
            continue
        raw = resolved.get(p.name.replace("-", "_"), resolved.get(p.name)) if not p.env else None
        if p.kind == "categorical":
            match = [c for c in p.choices if _same(c, raw) or (c is None and raw is None)
                     or (isinstance(c, str) and isinstance(raw, str) and c.upper() == raw.upper())]
            numeric = [c for c in p.choices if _number(c)]
            if match:
                chosen[p.key] = match[0]
            elif _number(raw) and numeric:
                chosen[p.key] = min(numeric, key=lambda v: _distance(p, v, raw))
            else:
                chosen[p.key] = _middle(p)
        elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
            assert p.low is not None and p.high is not None
            if p.is_discrete():
                chosen[p.key] = min(p.values(), key=lambda v: _distance(p, v, raw))
            else:
                chosen[p.key] = min(p.high, max(p.low, float(raw)))
        else:
            chosen[p.key] = _middle(p)
    return chosen

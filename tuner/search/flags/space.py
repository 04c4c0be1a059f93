"""Flag search spaces as a user writes them (YAML files extending a preset) and what a search does with one:
parameter values -> a `Candidate` through the engine's coupling rules (coupling.py), Optuna suggestions,
grids, and neighbourhoods for local search. It never launches anything.

The parts live below: params.py (parameters, candidates), space_check.py (SearchSpace and its checks),
presets.py (built-in spaces); their names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TunerError
from tuner.runtime.engines.base import normalize_flag
from tuner.search.flags.coupling import apply_coupling
from tuner.search.flags.params import (
    ENV_PREFIX,
    PARAM_KINDS,
    Candidate,
    InvalidSpaceError,
    Param,
    check_mapping,
    env_str,
    param_from_mapping,
    param_key,
    params_from,
    round_float,
    same_value,
)
from tuner.search.flags.presets import preset_space
from tuner.search.flags.space_check import SearchSpace, check_engine_accepts, check_space, check_supported

__all__ = [
    "ENV_PREFIX", "MAX_GRID_POINTS", "PARAM_KINDS", "Candidate", "InvalidSpaceError", "Param", "SearchSpace",
    "active", "baseline_candidate", "candidate_from_values", "check_engine_accepts", "check_space", "check_supported",
    "complete_values", "grid", "load_space", "nearest_values", "neighbour_values", "neighbours",
    "ordered_neighbour_values", "param_from_mapping", "round_float", "space_from_mapping", "suggest",
]

MAX_GRID_POINTS = 100_000


# ----------------------------------------------------------------------------------------------------
# Reading spaces

_SPACE_KEYS = frozenset({"preset", "engine", "base_flags", "base_env", "params", "env", "remove", "name"})


def _start_from(data: Mapping[str, Any], where: str) -> SearchSpace:
    """The preset a file extends (unchecked: the file may fix what it lacks), or an empty space."""
    check_mapping(data, _SPACE_KEYS, subject=f"{where}:",
                  not_mapping=f"{where}: a space file must hold a mapping (params, base_flags, ...)")
    if data.get("preset"):
        return preset_space(str(data["preset"]), checked=False)
    return SearchSpace(())


def _merged_params(start: Sequence[Param], data: Mapping[str, Any], where: str) -> list[Param]:
    """The preset's parameters less those `remove` names, with the file's own (which replace a preset's
    parameter of the same key)."""
    params = list(start)
    for key in data.get("remove") or []:
        wanted = param_key(str(key))
        if not any(p.key == wanted for p in params):
            raise InvalidSpaceError(f"{where}: 'remove' names {key!r}, which the preset does not search")
        params = [p for p in params if p.key != wanted]
    for p in params_from(data.get("params"), where) + params_from(data.get("env"), where, env=True):
        params = [q for q in params if q.key != p.key] + [p]
    return params


def space_from_mapping(data: Mapping[str, Any], where: str = "<space>") -> SearchSpace:
    """A space from parsed YAML: `preset`, `engine`, `base_flags`, `base_env`, `params`, `env` (environment
    parameters), `remove` (preset parameters to drop)."""
    start = _start_from(data, where)
    family = start.family
    if data.get("engine"):
        family = "vllm" if str(data["engine"]).lower() == "vllm" else "sglang"
    params = _merged_params(start.params, data, where)
    flags = data.get("base_flags") or {}
    env = data.get("base_env") or {}
    if not isinstance(flags, Mapping) or not isinstance(env, Mapping):
        raise InvalidSpaceError(f"{where}: base_flags and base_env must be mappings")
    base_flags = {**start.base_flags, **{normalize_flag(str(k)): v for k, v in flags.items()}}
    base_env = {**start.base_env, **{str(k): env_str(v) for k, v in env.items()}}
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
# Values -> candidates

def active(p: Param, values: Mapping[str, Any]) -> bool:
    """Whether `p` is in play given the values chosen so far (a `when` on an inactive parameter is false)."""
    for name, allowed in p.when:
        if name not in values:
            return False
        if not any(same_value(values[name], a) or (values[name] is None and a is None) for a in allowed):
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


def _unique_near(value: Any, candidates: Iterator[Any]) -> list[Any]:
    """`candidates` in order, without repeats and without `value` itself."""
    out: list[Any] = []
    for v in candidates:
        if v != value and v not in out:
            out.append(v)
    return out


def _continuous_neighbours(p: Param, low: float, high: float, value: Any) -> list[Any]:
    """+-5/10/20% of the range, clipped to it."""
    span = high - low
    return _unique_near(value, (round_float(min(high, max(low, value + sign * f * span)), None)
                                for f in (0.05, 0.1, 0.2) for sign in (-1, 1)))


def _log_int_neighbours(p: Param, low: float, high: float, value: Any) -> list[Any]:
    """x and / 2^0.25, 2^0.5, 2, rounded and clipped to the range."""
    return _unique_near(value, (min(int(high), max(int(low), v))
                                for f in (2 ** 0.25, 2 ** 0.5, 2.0) for v in (round(value * f), round(value / f))))


def _discrete_neighbours(p: Param, value: Any) -> list[Any]:
    """Every other value of a short range; 1, 2 and 4 index steps each way in a long one."""
    values = p.values()
    if len(values) <= MAX_ALL_VALUES:
        return [v for v in values if v != value]
    i = min(range(len(values)), key=lambda k: abs(values[k] - value))
    picks = {i + s * d for s in NEIGHBOUR_STEPS for d in (-1, 1)}
    return [values[k] for k in sorted(picks) if 0 <= k < len(values) and k != i]


def neighbour_values(p: Param, value: Any) -> list[Any]:
    """Values of `p` near `value`: every other choice of a short domain, a few steps each way of a long one,
    and +-5/10/20% of the range of a continuous float."""
    if p.kind == "categorical":
        return [c for c in p.choices if not (same_value(c, value) or (c is None and value is None))]
    assert p.low is not None and p.high is not None
    if p.kind == "float" and p.step is None:
        return _continuous_neighbours(p, p.low, p.high, value)
    if p.kind == "int" and p.log:
        return _log_int_neighbours(p, p.low, p.high, value)
    return _discrete_neighbours(p, value)


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
    ia = next((i for i, c in enumerate(values) if same_value(c, a) or (c is None and a is None)), 0)
    ib = next((i for i, c in enumerate(values) if same_value(c, b) or (c is None and b is None)), 0)
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


def _nearest_choice(p: Param, raw: Any) -> Any:
    """The choice equal to `raw` (strings in any case), else the numeric choice nearest to it, else the middle."""
    match = [c for c in p.choices if same_value(c, raw) or (c is None and raw is None)
             or (isinstance(c, str) and isinstance(raw, str) and c.upper() == raw.upper())]
    if match:
        return match[0]
    numeric = [c for c in p.choices if _number(c)]
    if _number(raw) and numeric:
        return min(numeric, key=lambda v: _distance(p, v, raw))
    return _middle(p)


def _nearest_number(p: Param, raw: Any) -> Any:
    """The value of a numeric parameter nearest to `raw`; the middle when `raw` is no number."""
    if not _number(raw):
        return _middle(p)
    assert p.low is not None and p.high is not None
    if p.is_discrete():
        return min(p.values(), key=lambda v: _distance(p, v, raw))
    return min(p.high, max(p.low, float(raw)))


def nearest_values(space: SearchSpace, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The point of the space nearest to an engine's resolved arguments (e.g. /server_info of the baseline:
    `chunked_prefill_size` 8192, `cuda_graph_max_bs` 512, ...). Unknown flags get their middle value."""
    chosen: dict[str, Any] = {}
    for p in space.params:
        if not active(p, chosen):
            continue
        raw = resolved.get(p.name.replace("-", "_"), resolved.get(p.name)) if not p.env else None
        chosen[p.key] = _nearest_choice(p, raw) if p.kind == "categorical" else _nearest_number(p, raw)
    return chosen

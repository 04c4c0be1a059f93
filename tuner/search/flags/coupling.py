"""SGLang's coupling rules between speculative-decoding flags, applied to every candidate and checked on
whole spaces before any launch (engines.md):

- speculative flags only mean something with --speculative-algorithm; suffix flags only with SUFFIX;
- setting one of steps / eagle-topk / num-draft-tokens needs all three (missing ones get SGLang's defaults);
- eagle-topk 1 forces num-draft-tokens = num-steps + 1; SGLANG_ENABLE_SPEC_V2=1 allows only topk 1;
- SUFFIX needs num-draft-tokens.

Pure functions over flag mappings; no engine is started here. vLLM spaces have no such rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.search.flags.space import Param, SearchSpace

ALGORITHM = "speculative-algorithm"
STEPS = "speculative-num-steps"
TOPK = "speculative-eagle-topk"
DRAFTS = "speculative-num-draft-tokens"
TRIPLE = (STEPS, TOPK, DRAFTS)
SPEC_V2_ENV = "SGLANG_ENABLE_SPEC_V2"
EAGLE_FAMILY = ("EAGLE", "EAGLE3", "NEXTN", "STANDALONE")
MODEL_FREE = ("NGRAM", "SUFFIX")
DEFAULT_TRIPLE = (3, 1, 4)


def _upper(value: Any) -> str | None:
    return None if value is None else str(value).upper()


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


def _is_spec_flag(name: str) -> bool:
    return name.startswith("speculative-") and name != ALGORITHM


def _is_suffix_flag(name: str) -> bool:
    return name.startswith("speculative-suffix-")


def _algorithm_domain(space: SearchSpace) -> list[str | None]:
    if ALGORITHM in space.base_flags:
        return [_upper(space.base_flags[ALGORITHM])]
    p = space.param(ALGORITHM)
    if p is None:
        return [None]
    return [_upper(c) for c in p.choices]


def _allowed_algorithms(name: str, domain: list[str | None]) -> list[str | None]:
    """The algorithms under which flag `name` means something."""
    if _is_suffix_flag(name):
        return [a for a in domain if a == "SUFFIX"]
    if name in (STEPS, TOPK):
        return [a for a in domain if a in EAGLE_FAMILY]
    return [a for a in domain if a is not None]


def implied_conditions(space: SearchSpace) -> tuple[list[Param], list[str]]:
    """Add the conditions the rules imply to speculative parameters (only under a matching algorithm; draft
    tokens only when topk > 1 if every algorithm is EAGLE-like). Returns (params, notes)."""
    if space.family != "sglang":
        return list(space.params), []
    params = list(space.params)
    notes: list[str] = []
    alg_param = space.param(ALGORITHM)
    domain = _algorithm_domain(space)
    out: list[Param] = []
    for p in params:
        if p.env or not _is_spec_flag(p.name):
            out.append(p)
            continue
        when = dict(p.when)
        if alg_param is not None and ALGORITHM not in when:
            allowed = _allowed_algorithms(p.name, domain)
            if allowed and len(allowed) < len(domain):
                originals = tuple(c for c in alg_param.choices if _upper(c) in allowed)
                when[ALGORITHM] = originals
                notes.append(f"{p.key} is only searched when {ALGORITHM} is one of "
                             f"{', '.join(str(c) for c in originals)}")
        topk = space.param(TOPK)
        if (p.name == DRAFTS and topk is not None and TOPK not in when and topk.is_discrete()
                and all(a in EAGLE_FAMILY for a in domain if a is not None)):
            above_one = tuple(v for v in topk.values() if v != 1)
            if above_one and len(above_one) < len(topk.values()):
                when[TOPK] = above_one
                notes.append(f"{DRAFTS} is only searched when {TOPK} > 1 (topk 1 forces it to steps + 1)")
        out.append(replace(p, when=tuple(when.items())) if when != dict(p.when) else p)
    return out, notes


def _param_values(p: Param | None) -> list[Any]:
    if p is None:
        return []
    if p.is_discrete():
        return p.values()
    return [p.low, p.high]


def static_problems(space: SearchSpace) -> list[str]:
    """Contradictions no candidate can escape, each with what to change."""
    if space.family != "sglang":
        return []
    problems: list[str] = []
    domain = _algorithm_domain(space)
    can_be_off = None in domain
    spec_params = [p for p in space.params if not p.env and _is_spec_flag(p.name)]
    spec_base = [f for f in space.base_flags if _is_spec_flag(f)]
    if domain == [None] and (spec_params or spec_base):
        names = ", ".join("--" + n for n in [p.name for p in spec_params] + spec_base)
        problems.append(f"{names} need --{ALGORITHM}: fix it in the base flags or search it")
        return problems
    for flag in spec_base:
        if can_be_off:
            problems.append(f"base flag --{flag} is fixed but {ALGORITHM} can be unset; search it as a "
                            f"parameter under the algorithm, or fix --{ALGORITHM}")
        allowed = _allowed_algorithms(flag, domain)
        if not allowed:
            problems.append(f"base flag --{flag} does not apply to {ALGORITHM} "
                            f"{', '.join(str(a) for a in domain if a)}")
    for p in spec_params:
        if not _allowed_algorithms(p.name, domain):
            problems.append(f"parameter {p.name} does not apply to {ALGORITHM} "
                            f"{', '.join(str(a) for a in domain if a)}")
    if "SUFFIX" in domain and DRAFTS not in space.base_flags and space.param(DRAFTS) is None:
        problems.append(f"{ALGORITHM} SUFFIX needs --{DRAFTS}: fix it in the base flags or search it")
    topk_fixed = space.base_flags.get(TOPK)
    topk_values = [topk_fixed] if topk_fixed is not None else _param_values(space.param(TOPK))
    spec_v2_param = space.param("env:" + SPEC_V2_ENV)
    if _truthy(space.base_env.get(SPEC_V2_ENV)):
        if topk_fixed is not None and int(topk_fixed) != 1:
            problems.append(f"{SPEC_V2_ENV}=1 allows only --{TOPK} 1, but the base flags fix it to "
                            f"{topk_fixed}")
        elif space.param(TOPK) is not None and any(v != 1 for v in topk_values):
            problems.append(f"{SPEC_V2_ENV}=1 allows only --{TOPK} 1, but {TOPK} is searched up to "
                            f"{max(topk_values)}; remove the parameter or the variable")
    elif spec_v2_param is None and any(a in EAGLE_FAMILY for a in domain):
        pass
    if any(v is not None and v != 1 for v in topk_values) and DRAFTS not in space.base_flags \
            and space.param(DRAFTS) is None:
        problems.append(f"--{TOPK} above 1 needs --{DRAFTS} (it is only derived when topk is 1): fix it in "
                        "the base flags or search it")
    if TOPK in space.base_flags and int(space.base_flags[TOPK]) == 1 and space.param(DRAFTS) is not None \
            and all(a in EAGLE_FAMILY for a in domain if a is not None):
        problems.append(f"{DRAFTS} is searched but --{TOPK} 1 forces it to steps + 1; remove the parameter")
    return problems


def apply_coupling(family: str, flags: Mapping[str, Any], env: Mapping[str, str],
                   ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The flags an engine will really run with: missing speculative triple members filled in with SGLang's
    defaults, topk forced to 1 under SPEC_V2, draft tokens derived from steps when topk is 1. Returns
    (flags, env, notes saying what changed). Raises TunerError for what no rule can fix."""
    flags = dict(flags)
    env = dict(env)
    notes: list[str] = []
    if family != "sglang":
        return flags, env, notes
    alg = _upper(flags.get(ALGORITHM))
    spec = [f for f in flags if _is_spec_flag(f) and flags[f] is not None]
    if alg is None:
        if spec:
            raise TunerError(f"{', '.join('--' + f for f in spec)} need --{ALGORITHM}")
        return flags, env, notes
    if alg in EAGLE_FAMILY:
        steps, topk, drafts = (flags.get(STEPS), flags.get(TOPK), flags.get(DRAFTS))
        if _truthy(env.get(SPEC_V2_ENV)) and topk is not None and int(topk) != 1:
            notes.append(f"{TOPK} {topk} -> 1 ({SPEC_V2_ENV}=1 allows only topk 1)")
            topk = 1
        if any(v is not None for v in (steps, topk, drafts)):
            if topk is None:
                topk = 1
                notes.append(f"{TOPK} = 1 (setting one of the three speculative flags needs all three)")
            if steps is None:
                steps = int(drafts) - 1 if int(topk) == 1 and drafts is not None else DEFAULT_TRIPLE[0]
                notes.append(f"{STEPS} = {steps} (setting one of the three speculative flags needs all three)")
            if int(topk) == 1:
                if drafts is not None and int(drafts) != int(steps) + 1:
                    notes.append(f"{DRAFTS} {drafts} -> {int(steps) + 1} (topk 1 forces steps + 1)")
                elif drafts is None:
                    notes.append(f"{DRAFTS} = {int(steps) + 1} (topk 1 forces steps + 1)")
                drafts = int(steps) + 1
            elif drafts is None:
                raise TunerError(f"--{TOPK} {topk} needs --{DRAFTS} (only topk 1 derives it)")
            flags[STEPS], flags[TOPK], flags[DRAFTS] = int(steps), int(topk), int(drafts)
    elif alg == "SUFFIX" and flags.get(DRAFTS) is None:
        raise TunerError(f"{ALGORITHM} SUFFIX needs --{DRAFTS}")
    if alg != "SUFFIX":
        for f in [f for f in flags if _is_suffix_flag(f)]:
            notes.append(f"--{f} dropped: it only applies to SUFFIX")
            del flags[f]
    return flags, env, notes

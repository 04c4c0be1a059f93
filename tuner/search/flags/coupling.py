"""SGLang's coupling rules between speculative-decoding flags, applied to every candidate and checked on
whole spaces before any launch (engines.md):

- speculative flags only mean something with --speculative-algorithm; suffix flags only with SUFFIX;
- setting one of steps / eagle-topk / num-draft-tokens needs all three (missing ones get SGLang's defaults);
- eagle-topk 1 forces num-draft-tokens = num-steps + 1; SGLANG_ENABLE_SPEC_V2=1 allows only topk 1;
- SUFFIX needs num-draft-tokens.

Pure functions over flag mappings; no engine is started here. vLLM spaces have no such rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from tuner.errors import TunerError
from tuner.search.flags.params import Param

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


def _find(params: Sequence[Param], key: str) -> Param | None:
    return next((p for p in params if p.key == key), None)


def _algorithm_domain(params: Sequence[Param], base_flags: Mapping[str, Any]) -> list[str | None]:
    """Every value --speculative-algorithm can take in the space (None: unset)."""
    if ALGORITHM in base_flags:
        return [_upper(base_flags[ALGORITHM])]
    p = _find(params, ALGORITHM)
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


def _all_eagle(domain: list[str | None]) -> bool:
    return all(a in EAGLE_FAMILY for a in domain if a is not None)


def _algorithm_condition(p: Param, alg_param: Param, domain: list[str | None]) -> tuple[Any, ...] | None:
    """The algorithm choices under which `p` is searched, when that is fewer than all of them."""
    allowed = _allowed_algorithms(p.name, domain)
    if not allowed or len(allowed) >= len(domain):
        return None
    return tuple(c for c in alg_param.choices if _upper(c) in allowed)


def _topk_condition(p: Param, topk: Param | None, domain: list[str | None]) -> tuple[Any, ...] | None:
    """Draft tokens are only searched when topk > 1 (topk 1 derives them), if every algorithm is EAGLE-like."""
    if p.name != DRAFTS or topk is None or not topk.is_discrete() or not _all_eagle(domain):
        return None
    above_one = tuple(v for v in topk.values() if v != 1)
    return above_one if above_one and len(above_one) < len(topk.values()) else None


def _with_implied(p: Param, params: Sequence[Param], domain: list[str | None], notes: list[str]) -> Param:
    """`p` with the conditions the rules imply added (a note for each)."""
    when = dict(p.when)
    alg_param = _find(params, ALGORITHM)
    if alg_param is not None and ALGORITHM not in when:
        originals = _algorithm_condition(p, alg_param, domain)
        if originals is not None:
            when[ALGORITHM] = originals
            notes.append(f"{p.key} is only searched when {ALGORITHM} is one of "
                         f"{', '.join(str(c) for c in originals)}")
    if TOPK not in when:
        above_one = _topk_condition(p, _find(params, TOPK), domain)
        if above_one is not None:
            when[TOPK] = above_one
            notes.append(f"{DRAFTS} is only searched when {TOPK} > 1 (topk 1 forces it to steps + 1)")
    return replace(p, when=tuple(when.items())) if when != dict(p.when) else p


def implied_conditions(family: str, params: Sequence[Param], base_flags: Mapping[str, Any],
                       ) -> tuple[list[Param], list[str]]:
    """Add the conditions the rules imply to speculative parameters (only under a matching algorithm; draft
    tokens only when topk > 1 if every algorithm is EAGLE-like). Returns (params, notes)."""
    if family != "sglang":
        return list(params), []
    notes: list[str] = []
    domain = _algorithm_domain(params, base_flags)
    out = [p if p.env or not _is_spec_flag(p.name) else _with_implied(p, params, domain, notes) for p in params]
    return out, notes


def _param_values(p: Param | None) -> list[Any]:
    if p is None:
        return []
    if p.is_discrete():
        return p.values()
    return [p.low, p.high]


def _domain_text(domain: list[str | None]) -> str:
    return ", ".join(str(a) for a in domain if a)


def _algorithm_problems(params: Sequence[Param], base_flags: Mapping[str, Any],
                        domain: list[str | None]) -> list[str]:
    """Speculative flags fixed or searched where the algorithm makes them meaningless."""
    problems: list[str] = []
    for flag in (f for f in base_flags if _is_spec_flag(f)):
        if None in domain:
            problems.append(f"base flag --{flag} is fixed but {ALGORITHM} can be unset; search it as a "
                            f"parameter under the algorithm, or fix --{ALGORITHM}")
        if not _allowed_algorithms(flag, domain):
            problems.append(f"base flag --{flag} does not apply to {ALGORITHM} {_domain_text(domain)}")
    for p in params:
        if not p.env and _is_spec_flag(p.name) and not _allowed_algorithms(p.name, domain):
            problems.append(f"parameter {p.name} does not apply to {ALGORITHM} {_domain_text(domain)}")
    return problems


def _topk_problems(params: Sequence[Param], base_flags: Mapping[str, Any], base_env: Mapping[str, str],
                   domain: list[str | None]) -> list[str]:
    """SPEC_V2 against topk, topk above 1 without draft tokens, draft tokens searched under a fixed topk 1."""
    problems: list[str] = []
    topk_fixed = base_flags.get(TOPK)
    topk_param = _find(params, TOPK)
    drafts_given = DRAFTS in base_flags or _find(params, DRAFTS) is not None
    topk_values = [topk_fixed] if topk_fixed is not None else _param_values(topk_param)
    if _truthy(base_env.get(SPEC_V2_ENV)):
        if topk_fixed is not None and int(topk_fixed) != 1:
            problems.append(f"{SPEC_V2_ENV}=1 allows only --{TOPK} 1, but the base flags fix it to "
                            f"{topk_fixed}")
        elif topk_param is not None and any(v != 1 for v in topk_values):
            problems.append(f"{SPEC_V2_ENV}=1 allows only --{TOPK} 1, but {TOPK} is searched up to "
                            f"{max(topk_values)}; remove the parameter or the variable")
    if any(v is not None and v != 1 for v in topk_values) and not drafts_given:
        problems.append(f"--{TOPK} above 1 needs --{DRAFTS} (it is only derived when topk is 1): fix it in "
                        "the base flags or search it")
    if topk_fixed is not None and int(topk_fixed) == 1 and _find(params, DRAFTS) is not None \
            and _all_eagle(domain):
        problems.append(f"{DRAFTS} is searched but --{TOPK} 1 forces it to steps + 1; remove the parameter")
    return problems


def static_problems(family: str, params: Sequence[Param], base_flags: Mapping[str, Any],
                    base_env: Mapping[str, str]) -> list[str]:
    """Contradictions no candidate can escape, each with what to change."""
    if family != "sglang":
        return []
    domain = _algorithm_domain(params, base_flags)
    spec_names = [p.name for p in params if not p.env and _is_spec_flag(p.name)] + \
        [f for f in base_flags if _is_spec_flag(f)]
    if domain == [None] and spec_names:
        names = ", ".join("--" + n for n in spec_names)
        return [f"{names} need --{ALGORITHM}: fix it in the base flags or search it"]
    problems = _algorithm_problems(params, base_flags, domain)
    if "SUFFIX" in domain and DRAFTS not in base_flags and _find(params, DRAFTS) is None:
        problems.append(f"{ALGORITHM} SUFFIX needs --{DRAFTS}: fix it in the base flags or search it")
    return problems + _topk_problems(params, base_flags, base_env, domain)


def _fill_triple(steps: Any, topk: Any, drafts: Any, notes: list[str]) -> tuple[int, int, int]:
    """Steps, topk and draft tokens once one of them is set: missing ones get SGLang's defaults, and topk 1
    forces draft tokens to steps + 1."""
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
    return int(steps), int(topk), int(drafts)


def _couple_eagle(flags: dict[str, Any], env: Mapping[str, str], notes: list[str]) -> None:
    """The EAGLE-family rules, on `flags` in place: topk 1 under SPEC_V2, then the triple."""
    steps, topk, drafts = (flags.get(STEPS), flags.get(TOPK), flags.get(DRAFTS))
    if _truthy(env.get(SPEC_V2_ENV)) and topk is not None and int(topk) != 1:
        notes.append(f"{TOPK} {topk} -> 1 ({SPEC_V2_ENV}=1 allows only topk 1)")
        topk = 1
    if any(v is not None for v in (steps, topk, drafts)):
        flags[STEPS], flags[TOPK], flags[DRAFTS] = _fill_triple(steps, topk, drafts, notes)


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
    if alg is None:
        spec = [f for f in flags if _is_spec_flag(f) and flags[f] is not None]
        if spec:
            raise TunerError(f"{', '.join('--' + f for f in spec)} need --{ALGORITHM}")
        return flags, env, notes
    if alg in EAGLE_FAMILY:
        _couple_eagle(flags, env, notes)
    elif alg == "SUFFIX" and flags.get(DRAFTS) is None:
        raise TunerError(f"{ALGORITHM} SUFFIX needs --{DRAFTS}")
    if alg != "SUFFIX":
        for f in [f for f in flags if _is_suffix_flag(f)]:
            notes.append(f"--{f} dropped: it only applies to SUFFIX")
            del flags[f]
    return flags, env, notes

"""The hand-off to the live search: the best parameter sets as SGLang flag sets in the Novita fork's
spelling (`--speculative-algorithm SUFFIX --speculative-suffix-*`), checked with the project's SGLang flag
rules (tuner.search.flags.coupling) and its SGLang-compatible parser (the simulator's), and optionally a
`tuner flag-search --space` file narrowed to the values the replay liked.

Writes files; it never launches an engine.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TunerError
from tuner.runtime.engines import flags_to_argv
from tuner.search.flags.coupling import apply_coupling
from tuner.search.flags.space import space_from_mapping
from tuner.suffix.cost import VerifyCostModel
from tuner.suffix.sweep import RankedParams
from tuner.suffix_decoding.params import DEFAULT_MAX_CACHED_REQUESTS, SuffixParams

ALGORITHM_FLAG = "speculative-algorithm"
FLAG_OF_FIELD = {  # SuffixParams field -> the fork's flag (engines.md)
    "cache_max_depth": "speculative-suffix-cache-max-depth",
    "max_spec_factor": "speculative-suffix-max-spec-factor",
    "max_spec_offset": "speculative-suffix-max-spec-offset",
    "min_token_prob": "speculative-suffix-min-token-prob",
    "num_draft_tokens": "speculative-num-draft-tokens",
}
MAX_CACHED_FLAG = "speculative-suffix-max-cached-requests"


class HandoffError(TunerError):
    """A flag set the project's SGLang flag rules or parser reject (a bug here, or a changed parser)."""


def suffix_flags(params: SuffixParams, max_cached_requests: int = DEFAULT_MAX_CACHED_REQUESTS,
                 ) -> dict[str, Any]:
    """The SGLang flags of one parameter set (the cache size only when it is not the default)."""
    flags: dict[str, Any] = {ALGORITHM_FLAG: "SUFFIX"}
    for field, flag in FLAG_OF_FIELD.items():
        flags[flag] = getattr(params, field)
    if max_cached_requests != DEFAULT_MAX_CACHED_REQUESTS:
        flags[MAX_CACHED_FLAG] = max_cached_requests
    return flags


def validate_suffix_flags(flags: Mapping[str, Any]) -> list[str]:
    """Check a flag set as a flag search would run it; returns its argv. Raises HandoffError."""
    try:
        resolved, _, notes = apply_coupling("sglang", flags, {})
    except TunerError as exc:
        raise HandoffError(f"flag set {dict(flags)} breaks SGLang's speculative-flag rules: {exc}") from None
    if notes or resolved != dict(flags):
        raise HandoffError(f"SGLang's rules would change flag set {dict(flags)}: {'; '.join(notes)}")
    argv = flags_to_argv(flags)
    from tuner.runtime.sim.args import build_parser

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            build_parser("seed").parse_args(["--model-path", "model", *argv])  # the fork's SUFFIX surface
    except SystemExit:
        last = errors.getvalue().strip().splitlines()[-1:] or ["rejected"]
        raise HandoffError(f"the SGLang flag parser rejects {' '.join(argv)}: {last[0]}") from None
    return argv


def distinct_best(ranked: Sequence[RankedParams], top: int) -> list[RankedParams]:
    """The best `top` sets whose replays differ (sets that drafted exactly alike count once: the best-ranked
    of them, which is the closest to the engine defaults)."""
    out: list[RankedParams] = []
    seen: set[tuple[int, int, int]] = set()
    for r in ranked:
        outcome = (r.figures.verify_steps, r.figures.drafted_tokens, r.figures.accepted_tokens)
        if outcome in seen:
            continue
        seen.add(outcome)
        out.append(r)
        if len(out) == top:
            break
    return out


def handoff_document(ranked: Sequence[RankedParams], top: int, cost: VerifyCostModel, trace: str,
                     max_cached_requests: int = DEFAULT_MAX_CACHED_REQUESTS) -> dict[str, Any]:
    """The hand-off mapping: the best `top` sets as validated flag sets, with their replay figures."""
    sets = []
    for r in distinct_best(ranked, top):
        flags = suffix_flags(r.params, max_cached_requests)
        argv = validate_suffix_flags(flags)
        sets.append({"rank": r.rank, "flags": flags, "argv": " ".join(argv),
                     "replay": {k: v for k, v in r.to_json().items() if k not in ("rank", "params")}})
    return {
        "engine": "sglang",
        "note": "SUFFIX flag sets from `tuner suffix-replay` (Novita SGLang fork spelling); enqueue them as "
                "flag-search trials, or search the narrowed space written with --handoff-space",
        "trace": trace,
        "cost_model": {"decode_step_s": cost.decode_step_s, "verify_token_s": cost.verify_token_s,
                       "draft_s": cost.draft_s},
        "flag_sets": sets,
    }


def narrowed_space(ranked: Sequence[RankedParams], top: int,
                   max_cached_requests: int = DEFAULT_MAX_CACHED_REQUESTS) -> dict[str, Any]:
    """A flag-search space file (preset sglang-suffix) whose suffix parameters are categorical over the
    values of the best `top` sets; checked with the flag search's own space reader."""
    params: dict[str, Any] = {}
    base_flags: dict[str, Any] = {}
    best = distinct_best(ranked, top)
    for field, flag in FLAG_OF_FIELD.items():
        values = sorted({getattr(r.params, field) for r in best})
        if len(values) > 1:
            params[flag] = {"type": "categorical", "choices": values}
        else:
            base_flags[flag] = values[0]
    if max_cached_requests != DEFAULT_MAX_CACHED_REQUESTS:
        base_flags[MAX_CACHED_FLAG] = max_cached_requests
    # the preset's suffix parameters are replaced or fixed; its memory knobs stay searched
    data: dict[str, Any] = {"preset": "sglang-suffix", "name": "suffix-replay",
                            "remove": [f for f in FLAG_OF_FIELD.values() if f in base_flags],
                            "params": params, "base_flags": base_flags}
    try:
        space_from_mapping(data, "<suffix-replay space>")
    except TunerError as exc:
        raise HandoffError(f"the narrowed space is not a valid flag-search space: {exc}") from None
    return data


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))

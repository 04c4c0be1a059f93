"""The hand-off to flag-search: valid SGLang SUFFIX flag sets and a space flag-search accepts."""

from __future__ import annotations

import pytest

from tuner.search.flags.space import space_from_mapping
from tuner.suffix.cost import VerifyCostModel
from tuner.suffix.handoff import HandoffError, handoff_document, narrowed_space, validate_suffix_flags
from tuner.suffix.sweep import SweepGrid, sweep
from tuner.suffix.synthetic import synthetic_agentic_trace


@pytest.fixture(scope="module")
def ranked():  # type: ignore[no-untyped-def]
    trace = synthetic_agentic_trace(sessions=2, turns_per_session=3, repetition=0.8, response_tokens=80)
    grid = SweepGrid(depths=(24, 64), max_spec_factors=(1.0, 2.0), max_spec_offsets=(0.0, 4.0),
                     min_token_probs=(0.1, 0.3), num_draft_tokens=(4, 8))
    return sweep(trace, grid, VerifyCostModel())


def test_handoff_flag_sets_are_valid_suffix_flags_in_the_forks_spelling(ranked) -> None:  # type: ignore[no-untyped-def]
    doc = handoff_document(ranked, 3, VerifyCostModel(), "trace.jsonl", max_cached_requests=500)
    assert 1 <= len(doc["flag_sets"]) <= 3
    for entry in doc["flag_sets"]:
        flags = entry["flags"]
        assert flags["speculative-algorithm"] == "SUFFIX"
        assert set(flags) == {"speculative-algorithm", "speculative-suffix-cache-max-depth",
                              "speculative-suffix-max-spec-factor", "speculative-suffix-max-spec-offset",
                              "speculative-suffix-min-token-prob", "speculative-num-draft-tokens",
                              "speculative-suffix-max-cached-requests"}
        assert entry["argv"] == " ".join(validate_suffix_flags(flags))
    speedups = [e["replay"]["estimated_speedup"] for e in doc["flag_sets"]]
    assert speedups == sorted(speedups, reverse=True)


def test_narrowed_space_is_a_flag_search_space(ranked) -> None:  # type: ignore[no-untyped-def]
    space = space_from_mapping(narrowed_space(ranked, 3))
    assert space.base_flags["speculative-algorithm"] == "SUFFIX"
    best = ranked[0].params
    fixed_or_searched = {**space.base_flags, **{p.name: p.values() for p in space.params}}
    depth = fixed_or_searched["speculative-suffix-cache-max-depth"]
    assert best.cache_max_depth == depth or best.cache_max_depth in depth


def test_invalid_flag_sets_are_refused() -> None:
    with pytest.raises(HandoffError, match="unrecognized"):
        validate_suffix_flags({"speculative-algorithm": "SUFFIX", "speculative-num-draft-tokens": 8,
                               "speculative-suffix-max-depth": 24})
    with pytest.raises(HandoffError, match="num-draft-tokens"):
        validate_suffix_flags({"speculative-algorithm": "SUFFIX", "speculative-suffix-cache-max-depth": 24})

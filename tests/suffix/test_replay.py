"""Replay behaviour a user relies on: determinism, no repetition -> near-zero acceptance, verbatim
repetition -> high acceptance, and the global tree's request cap."""

from __future__ import annotations

import numpy as np

from tuner.suffix.replay import replay
from tuner.suffix.synthetic import synthetic_agentic_trace
from tuner.suffix_decoding.params import ENGINE_DEFAULTS, SuffixParams
from tuner.suffix_decoding.speculator import SuffixSpeculator
from tuner.suffix_decoding.traces import TraceRequest


def test_replay_is_deterministic_and_one_pass_equals_separate_passes() -> None:
    trace = synthetic_agentic_trace(sessions=3, turns_per_session=3, repetition=0.6, response_tokens=80, seed=5)
    again = synthetic_agentic_trace(sessions=3, turns_per_session=3, repetition=0.6, response_tokens=80, seed=5)
    sets = [ENGINE_DEFAULTS, SuffixParams(16, 2.0, 4.0, 0.05, 12)] * 4  # 8 sets: the dense path
    together = replay(trace, sets)
    alone = [replay(again, [p])[0] for p in sets[:2]]
    assert together[:2] == alone


def test_no_repetition_gives_near_zero_acceptance() -> None:
    figures = replay(synthetic_agentic_trace(sessions=4, turns_per_session=3, repetition=0.0, seed=1),
                     [ENGINE_DEFAULTS])[0]
    assert figures.accepted_tokens <= 0.01 * figures.response_tokens
    assert figures.tokens_per_step < 1.02


def test_verbatim_repetition_gives_high_acceptance() -> None:
    rng = np.random.default_rng(0)
    response = rng.integers(0, 50000, 300).astype(np.int32)
    prompt = rng.integers(0, 50000, 50).astype(np.int32)
    trace = [TraceRequest(str(i), prompt, response) for i in range(6)]
    figures = replay(trace, [SuffixParams(num_draft_tokens=16)])[0]
    first = replay(trace[:1], [SuffixParams(num_draft_tokens=16)])[0]  # nothing to repeat yet
    assert figures.acceptance_rate > 0.9
    repeats_per_step = ((figures.response_tokens - first.response_tokens)
                        / (figures.verify_steps - first.verify_steps))
    assert repeats_per_step > 12  # of the 16 verified tokens, 15 are drafts


def test_global_tree_honours_the_request_cap() -> None:
    speculator = SuffixSpeculator(64, max_cached_requests=3)
    for r in synthetic_agentic_trace(sessions=2, turns_per_session=5, repetition=0.5, seed=2):
        speculator.start_request(r.prompt_token_ids, r.response_token_ids)
        speculator.finish_request()
        assert speculator.cached_responses <= 3
    assert speculator.global_tokens < 3 * 260

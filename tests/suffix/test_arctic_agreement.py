"""Our replay against arctic-inference's own suffix cache on the same trace (skipped where arctic-inference is
not installed; it builds on CPU with `pip install --no-build-isolation arctic-inference` next to torch)."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.suffix.replay import replay
from tuner.suffix.synthetic import synthetic_agentic_trace
from tuner.suffix_decoding.params import SuffixParams

arctic = pytest.importorskip("arctic_inference.suffix_decoding")


def _arctic_replay(requests, p: SuffixParams, max_cached_requests: int) -> tuple[int, int, int]:
    """(verify steps, drafted tokens, accepted tokens) with arctic's cache, driven as its simulator does."""
    cache = arctic.SuffixDecodingCache(max_tree_depth=p.cache_max_depth, max_cached_requests=max_cached_requests)
    steps = drafted = accepted = 0
    for i, r in enumerate(requests):
        cache.start_request(i, r.prompt_token_ids)
        truth = r.response_token_ids.tolist()
        done: list[int] = []
        while len(done) < len(truth):
            context = np.asarray(r.prompt_token_ids.tolist() + done, dtype=np.int32)
            draft = cache.speculate(i, context, max_spec_tokens=p.max_spec_tokens,
                                    max_spec_factor=p.max_spec_factor, max_spec_offset=p.max_spec_offset,
                                    min_token_prob=p.min_token_prob)
            ok = 0
            for token, actual in zip(draft.token_ids, truth[len(done):]):
                if token != actual:
                    break
                ok += 1
            new = truth[len(done):len(done) + ok + 1]
            done += new
            cache.add_active_response(i, new)
            steps += 1
            drafted += len(draft.token_ids)
            accepted += ok
        cache.stop_request(i)
    return steps, drafted, accepted


@pytest.mark.parametrize("params", [
    SuffixParams(),
    SuffixParams(cache_max_depth=24, max_spec_factor=2.0, max_spec_offset=3.0, min_token_prob=0.05,
                 num_draft_tokens=16),
])
def test_acceptance_agrees_with_arctic_inference(params: SuffixParams) -> None:
    trace = synthetic_agentic_trace(sessions=4, turns_per_session=4, repetition=0.6, response_tokens=150,
                                    seed=3)
    ours = replay(trace, [params], max_cached_requests=6)[0]
    steps, drafted, accepted = _arctic_replay(trace, params, 6)
    assert ours.accepted_tokens == pytest.approx(accepted, rel=0.02)
    assert ours.verify_steps == pytest.approx(steps, rel=0.02)
    print(f"ours {ours.verify_steps} {ours.drafted_tokens} {ours.accepted_tokens}; arctic {steps} {drafted} {accepted}")

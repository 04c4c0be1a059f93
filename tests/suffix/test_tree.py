"""The suffix tree's answers on hand-made sequences: matches, counts, probabilities, caps."""

from __future__ import annotations

import numpy as np

from tuner.suffix_decoding.params import SuffixParams
from tuner.suffix_decoding.speculator import Candidates, ParamTable, PathCandidate
from tuner.suffix_decoding.tree import SuffixIndex


def _index(tokens: list[int], depth: int = 64) -> SuffixIndex:
    index = SuffixIndex(depth)
    index.add_sequence(np.asarray(tokens, dtype=np.int32))
    return index


def test_match_groups_lengths_with_the_same_occurrences() -> None:
    seq = [1, 2, 3, 9, 2, 3, 7, 1, 2, 3]
    index = _index(seq)
    groups = index.match(np.asarray(seq, dtype=np.int32), len(seq))
    # "3" occurs 3 times, "2 3" also 3 times, "1 2 3" twice (ends 2 and 9); longer only at the end itself
    assert [(g.match_len_lo, g.match_len_hi, g.ends.tolist()) for g in groups] == [
        (1, 2, [2, 5, 9]), (3, 3, [2, 9]), (4, 9, [9])]


def test_greedy_path_probabilities_are_count_ratios() -> None:
    seq = [5, 1, 5, 1, 5, 2, 5]  # after 5: 1, 1, 2 and the end -> count(5) = 4
    index = _index(seq)
    ends = index.occurrences(5, len(seq))
    tokens, probs = index.greedy_path(ends, 3, len(seq))
    assert tokens.tolist() == [1, 5, 1]
    assert probs.tolist() == [0.5, 0.5, 0.25]  # 2/4; "5 1" -> "5" always; "5 1 5" -> "1" 1 of 2


def test_depth_bounds_match_length() -> None:
    seq = list(range(10)) * 2
    assert max(g.match_len_hi for g in _index(seq, depth=4).match(np.asarray(seq[-4:]), len(seq))) == 3
    # never the whole context: the context's own occurrence would match it trivially
    assert max(g.match_len_hi for g in _index(seq, depth=64).match(np.asarray(seq), len(seq))) == 19


def test_visible_end_hides_the_future() -> None:
    index = _index([1, 2, 1, 2])
    assert index.occurrences(2, 2).tolist() == [1]
    assert index.occurrences(2, 4).tolist() == [1, 3]


def test_eviction_forgets_the_oldest_sequence() -> None:
    index = SuffixIndex(8)
    index.add_sequence(np.asarray([7, 7, 7], dtype=np.int32))
    index.add_sequence(np.asarray([1, 7], dtype=np.int32))
    index.evict_oldest()
    assert index.sequence_count == 1
    assert index.occurrences(7, 10**6).tolist() == [index.last_start + 1]


def _choose(params: SuffixParams, probs: list[float], match_len: int = 4, agreed: int = 99) -> tuple[int, int]:
    path = PathCandidate(match_len, match_len, np.asarray(probs), agreed)
    n, ok = ParamTable([params]).choose(Candidates(100, (path,), ()))
    return int(n[0]), int(ok[0])


def test_draft_capped_by_factor_offset_budget_and_min_prob() -> None:
    sure = [1.0] * 20
    assert _choose(SuffixParams(max_spec_factor=1.0, max_spec_offset=0.0, num_draft_tokens=16), sure) == (4, 4)
    assert _choose(SuffixParams(max_spec_factor=1.0, max_spec_offset=3.0, num_draft_tokens=16), sure) == (7, 7)
    assert _choose(SuffixParams(max_spec_factor=4.0, num_draft_tokens=8), sure) == (7, 7)  # budget 8 - 1
    fading = [0.9, 0.5, 0.3, 0.05]
    assert _choose(SuffixParams(min_token_prob=0.3, num_draft_tokens=16), fading) == (3, 3)
    assert _choose(SuffixParams(num_draft_tokens=16), sure, agreed=2) == (4, 2)


def test_depth_caps_speculation_after_a_long_match() -> None:
    # match of 60 tokens at depth 64 leaves room for 4 speculated tokens however generous the factor
    assert _choose(SuffixParams(cache_max_depth=64, max_spec_factor=4.0, num_draft_tokens=32), [1.0] * 40,
                   match_len=60) == (4, 4)

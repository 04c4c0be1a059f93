"""SuffixDecoding's speculator (Oliaro et al. 2024, as in arctic-inference 0.3.0) over two trees: the
request's own (prompt + tokens generated so far) and a global one over earlier responses, capped at
`max_cached_requests` responses with the oldest evicted first.

For every match length m the draft follows the most frequent continuation while its estimated probability
stays >= min_token_prob, for at most min(factor x m + offset, draft budget) tokens (and never past the tree
depth); the draft with the highest score (sum of probabilities) wins, longer matches winning ties, and the
request's tree wins ties with the global one. Many parameter sets are judged from one tree walk:
`Candidates` holds what does not depend on them, `ParamTable.choose` applies each set's caps.

`SuffixSpeculator` replays recorded requests one after another (the offline replay); `ServingSpeculator`
drafts for requests served concurrently (the simulated engine), with the same trees and the same choice:
served one at a time, the two agree draft for draft.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tuner.suffix_decoding.params import DEFAULT_MAX_CACHED_REQUESTS, SuffixParams
from tuner.suffix_decoding.tree import HIDDEN, SuffixIndex

_CAP_EPSILON = 1e-6  # arctic-inference adds it before truncating factor x match_length + offset


@dataclass(frozen=True)
class PathCandidate:
    """The draft path from match lengths `match_len_lo`..`match_len_hi`: `probs` (float64, non-increasing)
    per path token, and how many leading path tokens the recorded continuation agrees with."""

    match_len_lo: int
    match_len_hi: int
    probs: np.ndarray
    agreed_tokens: int


@dataclass(frozen=True)
class Candidates:
    """Everything any parameter set can draft at one position: `context_tokens` (prompt + generated so
    far), and the path candidates of the request's tree and of the global tree, shortest match first."""

    context_tokens: int
    local: tuple[PathCandidate, ...]
    global_: tuple[PathCandidate, ...]


class ParamTable:
    """Parameter sets as arrays, to choose every set's draft at a position in a few numpy operations."""

    def __init__(self, params: Sequence[SuffixParams]) -> None:
        if not params:
            raise ValueError("at least one parameter set is needed")
        self.params = tuple(params)
        shapes = sorted({(p.cache_max_depth, p.max_spec_factor, p.max_spec_offset) for p in self.params})
        shape_index = {s: i for i, s in enumerate(shapes)}
        self._shape_of = np.array([shape_index[(p.cache_max_depth, p.max_spec_factor, p.max_spec_offset)]
                                   for p in self.params])
        self._depth = np.array([s[0] for s in shapes], dtype=np.int64)
        self._factor = np.array([s[1] for s in shapes], dtype=np.float64)
        self._offset = np.array([s[2] for s in shapes], dtype=np.float64)
        probs = sorted({p.min_token_prob for p in self.params})
        prob_index = {v: i for i, v in enumerate(probs)}
        self._neg_min_prob = -np.array(probs, dtype=np.float64)
        self._prob_of = np.array([prob_index[p.min_token_prob] for p in self.params])
        self._budget = np.array([p.max_spec_tokens for p in self.params], dtype=np.int64)
        self.max_depth = int(self._depth.max())
        self.max_spec_tokens = int(self._budget.max())
        self.max_factor = float(self._factor.max())
        self.max_offset = float(self._offset.max())

    @property
    def size(self) -> int:
        return len(self.params)

    def path_tokens_needed(self, match_len_lo: int, match_len_hi: int) -> int:
        """The longest draft any set could take from a match group (tokens)."""
        cap = int(match_len_hi * self.max_factor + self.max_offset + _CAP_EPSILON)
        return max(0, min(self.max_spec_tokens, cap, self.max_depth - match_len_lo))

    def choose(self, candidates: Candidates) -> tuple[np.ndarray, np.ndarray]:
        """Per parameter set, (speculated tokens of its draft, how many of them are accepted), int64 (C,)."""
        local_score, local_n, local_ok = self._best(candidates.local, candidates.context_tokens)
        global_score, global_n, global_ok = self._best(candidates.global_, candidates.context_tokens)
        use_local = local_score >= global_score
        return np.where(use_local, local_n, global_n), np.where(use_local, local_ok, global_ok)

    def _best(self, paths: tuple[PathCandidate, ...], context_tokens: int,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = len(self.params)
        if not paths:
            zero = np.zeros(size, dtype=np.int64)
            return np.zeros(size), zero, zero
        longest_match = np.minimum(context_tokens, self._depth) - 1  # a match never uses the whole context
        reach = np.empty((self._depth.size, len(paths)), dtype=np.int64)  # tokens before caps by budget/prob
        longest_path = max(p.probs.size for p in paths)
        prefix = np.zeros((len(paths), longest_path + 1))
        usable = np.empty((self._neg_min_prob.size, len(paths)), dtype=np.int64)
        for g, path in enumerate(paths):
            lengths = np.arange(path.match_len_lo, path.match_len_hi + 1)
            caps = np.floor(lengths[None, :] * self._factor[:, None] + self._offset[:, None] + _CAP_EPSILON)
            room = np.minimum(caps.astype(np.int64), self._depth[:, None] - lengths[None, :])
            room[lengths[None, :] > longest_match[:, None]] = -1
            reach[:, g] = room.max(axis=1)
            prefix[g, 1:path.probs.size + 1] = np.cumsum(path.probs)
            prefix[g, path.probs.size + 1:] = prefix[g, path.probs.size]
            usable[:, g] = np.searchsorted(-path.probs, self._neg_min_prob, side="right")
        reach_c = reach[self._shape_of]
        drafted = np.maximum(np.minimum(np.minimum(reach_c, usable[self._prob_of]), self._budget[:, None]), 0)
        score = prefix[np.arange(len(paths))[None, :], drafted]
        score[reach_c < 0] = -np.inf  # match length out of this set's context window
        best = len(paths) - 1 - np.argmax(score[:, ::-1], axis=1)  # ties: the longer match
        rows = np.arange(size)
        best_score = np.maximum(score[rows, best], 0.0)
        best_n = np.where(np.isfinite(score[rows, best]), drafted[rows, best], 0)
        agreed = np.array([p.agreed_tokens for p in paths], dtype=np.int64)[best]
        return best_score, best_n, np.minimum(best_n, agreed)


def choose_one(params: SuffixParams, candidates: Candidates) -> tuple[int, int]:
    """`ParamTable([params]).choose(candidates)` for one set, in plain Python (a live engine drafts for one
    set, and numpy's per-call cost dominates arrays this small): (speculated tokens, accepted tokens)."""
    local_score, local_n, local_ok = _best_one(params, candidates.local, candidates.context_tokens)
    global_score, global_n, global_ok = _best_one(params, candidates.global_, candidates.context_tokens)
    return (local_n, local_ok) if local_score >= global_score else (global_n, global_ok)


def _best_one(params: SuffixParams, paths: tuple[PathCandidate, ...], context_tokens: int,
              ) -> tuple[float, int, int]:
    depth, budget = params.cache_max_depth, params.max_spec_tokens
    longest_match = min(context_tokens, depth) - 1
    best: tuple[float, int, int] | None = None
    for path in paths:
        reach = -1
        for length in range(path.match_len_lo, min(path.match_len_hi, longest_match) + 1):
            cap = math.floor(length * params.max_spec_factor + params.max_spec_offset + _CAP_EPSILON)
            reach = max(reach, min(cap, depth - length))
        if reach < 0:
            score, drafted = -math.inf, 0
        else:
            probs = path.probs.tolist()
            usable = sum(1 for p in probs if p >= params.min_token_prob)
            drafted = max(min(reach, usable, budget), 0)
            score = sum(probs[:drafted], 0.0)
        if best is None or score >= best[0]:  # ties: the longer match
            best = (score, drafted, min(drafted, path.agreed_tokens))
    if best is None or best[0] == -math.inf:
        return 0.0, 0, 0
    return max(best[0], 0.0), best[1], best[2]


class SuffixSpeculator:
    """The two trees of one replay. Per request: `start_request`, `candidates(position)` for any response
    positions (the trees then hold the prompt and response[:position]), `finish_request`.

    `max_cached_requests`: responses in the global tree (the request being served counts; 0 disables the
    global tree, negative keeps all), as --speculative-suffix-max-cached-requests."""

    def __init__(self, max_depth: int, max_cached_requests: int = DEFAULT_MAX_CACHED_REQUESTS) -> None:
        self.max_depth = max_depth
        self.max_cached_requests = max_cached_requests
        self._global = SuffixIndex(max_depth)
        self._local: SuffixIndex | None = None
        self._sequence = np.empty(0, dtype=np.int32)
        self._prompt_tokens = 0
        self._response = np.empty(0, dtype=np.int32)

    @property
    def cached_responses(self) -> int:
        return self._global.sequence_count

    @property
    def global_tokens(self) -> int:
        """Tokens the global tree holds now (live responses, separators included)."""
        return self._global.live_token_count

    def start_request(self, prompt: np.ndarray, response: np.ndarray) -> None:
        self._prompt_tokens = int(prompt.size)
        self._response = response
        self._sequence = np.concatenate((prompt, response)).astype(np.int32, copy=False)
        self._local = SuffixIndex(self.max_depth)
        self._local.add_sequence(self._sequence, index_tokens=self._prompt_tokens)
        if self.max_cached_requests != 0:
            self._global.add_sequence(response)
            while 0 <= self.max_cached_requests < self._global.sequence_count:
                self._global.evict_oldest()

    def finish_request(self) -> None:
        self._local = None

    def candidates(self, position: int, table: ParamTable) -> Candidates:
        """What can be drafted before response token `position` (0-based)."""
        assert self._local is not None, "start_request first"
        end = self._prompt_tokens + position
        context = self._sequence[max(0, end - self.max_depth):end]
        future = self._response[position:]
        local = self._paths(self._local, context, end, future, table)
        global_: tuple[PathCandidate, ...] = ()
        if self.max_cached_requests != 0:
            global_ = self._paths(self._global, context, self._global.last_start + position, future, table)
        return Candidates(end, local, global_)

    @staticmethod
    def _paths(index: SuffixIndex, context: np.ndarray, visible_end: int, future: np.ndarray,
               table: ParamTable) -> tuple[PathCandidate, ...]:
        out = []
        for group in index.match(context, visible_end):
            wanted = table.path_tokens_needed(group.match_len_lo, group.match_len_hi)
            if wanted <= 0:
                continue
            tokens, probs = index.greedy_path(group.ends, wanted, visible_end)
            if tokens.size == 0:
                continue
            compared = min(tokens.size, future.size)
            differ = np.flatnonzero(tokens[:compared] != future[:compared])
            agreed = int(differ[0]) if differ.size else compared
            out.append(PathCandidate(group.match_len_lo, group.match_len_hi, probs, agreed))
        return tuple(out)


@dataclass
class _Served:
    local: SuffixIndex
    prompt_tokens: int
    generated: int
    global_start: int | None  # absolute offset (buffer offset + offset_shift) of its place in the global tree
    capacity: int


class ServingSpeculator:
    """One parameter set's speculation for requests served concurrently, as arctic-inference's cache: each
    request's tree (its prompt and what it has generated so far) and the global tree (responses of earlier and
    concurrent requests, each as far as it has been generated; `max_cached_requests` of them, oldest evicted
    first, 0 disables it, negative keeps all). Token ids are ints >= 0; request ids any hashable key.

    `start_request` (after the prefill), `add_tokens` for every token generated, `verify` before a decode
    step, `finish_request` when done or aborted, `reset` to forget every cached response (a cache flush).
    """

    def __init__(self, params: SuffixParams, max_cached_requests: int = DEFAULT_MAX_CACHED_REQUESTS, *,
                 max_cached_tokens: int | None = None) -> None:
        self.params = params
        self.max_cached_requests = max_cached_requests
        self.max_cached_tokens = max_cached_tokens  # a memory bound on the global tree as well (tokens)
        self._table = ParamTable([params])
        self._global = SuffixIndex(params.cache_max_depth)
        self._served: dict[object, _Served] = {}

    @property
    def cached_responses(self) -> int:
        return self._global.sequence_count

    def reset(self) -> None:
        """Forget every cached response (requests being served keep their own trees, and no longer feed
        the global one)."""
        self._global = SuffixIndex(self.params.cache_max_depth)
        for served in self._served.values():
            served.global_start = None

    def is_serving(self, rid: object) -> bool:
        return rid in self._served

    def response_tokens(self, rid: object) -> int:
        """Tokens added to the request's response so far. Raises KeyError for a request not served."""
        return self._served[rid].generated

    def start_request(self, rid: object, prompt_ids: Sequence[int], max_response_tokens: int) -> None:
        """A request whose response will hold at most `max_response_tokens` tokens. Raises ValueError for a
        request id already being served."""
        if rid in self._served:
            raise ValueError(f"request {rid!r} is already being served")
        prompt = np.asarray(prompt_ids, dtype=np.int32)
        capacity = max(0, int(max_response_tokens))
        local = SuffixIndex(self.params.cache_max_depth)
        local.add_sequence(np.concatenate((prompt, np.full(capacity, HIDDEN, dtype=np.int32))),
                           index_tokens=int(prompt.size))
        global_start = None
        if self.max_cached_requests != 0:
            global_start = self._global.add_sequence(np.full(capacity, HIDDEN, dtype=np.int32))
            global_start += self._global.offset_shift
            while (0 <= self.max_cached_requests < self._global.sequence_count
                   or (self.max_cached_tokens is not None and self._global.sequence_count > 1
                       and self._global.live_token_count > self.max_cached_tokens)):
                self._global.evict_oldest()
        self._served[rid] = _Served(local, int(prompt.size), 0, global_start, capacity)

    def add_tokens(self, rid: object, token_ids: Sequence[int]) -> None:
        """Tokens the request generated (appended to its response in both trees). Raises KeyError for a
        request not being served, ValueError past its `max_response_tokens`."""
        served = self._served[rid]
        tokens = np.asarray(token_ids, dtype=np.int32)
        if served.generated + tokens.size > served.capacity:
            raise ValueError(f"request {rid!r}: more than its {served.capacity} response tokens")
        served.local.reveal(served.prompt_tokens + served.generated, tokens)
        if served.global_start is not None:
            self._global.reveal(served.global_start - self._global.offset_shift + served.generated, tokens)
        served.generated += int(tokens.size)

    def verify(self, rid: object, next_tokens: Sequence[int]) -> tuple[int, int]:
        """The draft for the request's next tokens, checked against what the model produces next
        (`next_tokens`: the tokens a greedy verify pass compares the draft with; fewer than the draft near
        the end of a response): (speculated tokens, how many of them lead the draft and equal
        `next_tokens`)."""
        served = self._served[rid]
        end = served.prompt_tokens + served.generated
        sequence = served.local.tokens(max(0, end - self._table.max_depth), end)
        future = np.asarray(next_tokens[:self.params.max_spec_tokens], dtype=np.int32)
        local = SuffixSpeculator._paths(served.local, sequence, end, future, self._table)
        global_: tuple[PathCandidate, ...] = ()
        if served.global_start is not None:
            global_ = SuffixSpeculator._paths(self._global, sequence, self._global.size, future, self._table)
        return choose_one(self.params, Candidates(end, local, global_))

    def finish_request(self, rid: object) -> None:
        """The request is done (or aborted): its tree is dropped, its response stays in the global tree."""
        self._served.pop(rid, None)

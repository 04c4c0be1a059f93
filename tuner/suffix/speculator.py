"""SuffixDecoding's speculator (Oliaro et al. 2024, as in arctic-inference 0.3.0) over two trees: the
request's own (prompt + tokens generated so far) and a global one over earlier responses, capped at
`max_cached_requests` responses with the oldest evicted first.

For every match length m the draft follows the most frequent continuation while its estimated probability
stays >= min_token_prob, for at most min(factor x m + offset, draft budget) tokens (and never past the tree
depth); the draft with the highest score (sum of probabilities) wins, longer matches winning ties, and the
request's tree wins ties with the global one. Many parameter sets are judged from one tree walk:
`Candidates` holds what does not depend on them, `ParamTable.choose` applies each set's caps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tuner.suffix.params import DEFAULT_MAX_CACHED_REQUESTS, SuffixParams
from tuner.suffix.tree import SuffixIndex

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

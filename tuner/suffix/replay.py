"""Offline replay: each request, in arrival order, decoded through the speculator against its recorded
response with greedy verification (a draft token is accepted while it equals the recorded next token; the
first mismatch is replaced by the recorded token, as a verify pass's bonus token).

As arctic-inference's simulator, speculation starts at the first response token and requests run one
after another (a live server's concurrent requests see each other's responses only as far as generated).
With `first_token_from_prefill`, as an engine serves it: the prefill pass produces the first response token
and speculation starts at the second; the simulated engine's accept length is then this replay's, draft for
draft, when it serves the same trace one request at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tuner.suffix_decoding.params import DEFAULT_MAX_CACHED_REQUESTS, SuffixParams
from tuner.suffix_decoding.speculator import ParamTable, SuffixSpeculator
from tuner.suffix_decoding.traces import TraceRequest

DENSE_FROM_PARAM_SETS = 8  # from this many sets on, every position is judged once for all of them


@dataclass(frozen=True)
class ReplayFigures:
    """What one parameter set did over a trace. `drafted_tokens`: speculated tokens proposed (before
    padding to the verify width); `accepted_tokens`: those the recorded response confirmed."""

    params: SuffixParams
    requests: int
    response_tokens: int
    verify_steps: int
    drafted_tokens: int
    accepted_tokens: int
    prefill_tokens: int = 0  # first response tokens produced by prefill passes, not by verify steps

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens (0 when nothing was drafted)."""
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    @property
    def accepted_per_step(self) -> float:
        """Mean accepted draft tokens per verify step."""
        return self.accepted_tokens / self.verify_steps if self.verify_steps else 0.0

    @property
    def tokens_per_step(self) -> float:
        """Response tokens per verify step (SGLang's accept length: accepted drafts plus the bonus token)."""
        decoded = self.response_tokens - self.prefill_tokens
        return decoded / self.verify_steps if self.verify_steps else 0.0


def replay(requests: Iterable[TraceRequest], params: Sequence[SuffixParams], *,
           max_cached_requests: int = DEFAULT_MAX_CACHED_REQUESTS, first_token_from_prefill: bool = False,
           on_request: Callable[[TraceRequest], None] | None = None) -> list[ReplayFigures]:
    """Replay `requests` once for all `params` (one tree walk serves every set); figures in the order of
    `params`. `first_token_from_prefill`: no verify step for each response's first token (see above).
    `on_request` is called after each request (progress)."""
    table = ParamTable(params)
    speculator = SuffixSpeculator(table.max_depth, max_cached_requests)
    size = table.size
    steps = np.zeros(size, dtype=np.int64)
    drafted = np.zeros(size, dtype=np.int64)
    accepted = np.zeros(size, dtype=np.int64)
    n_requests = 0
    response_tokens = prefill_tokens = 0
    dense = size >= DENSE_FROM_PARAM_SETS
    for request in requests:
        length = int(request.response_token_ids.size)
        speculator.start_request(request.prompt_token_ids, request.response_token_ids)
        first = min(1, length) if first_token_from_prefill else 0
        if dense:
            _replay_dense(speculator, table, first, length, steps, drafted, accepted)
        else:
            _replay_sparse(speculator, table, first, length, steps, drafted, accepted)
        speculator.finish_request()
        n_requests += 1
        response_tokens += length
        prefill_tokens += first
        if on_request is not None:
            on_request(request)
    return [ReplayFigures(p, n_requests, response_tokens, int(steps[i]), int(drafted[i]), int(accepted[i]),
                          prefill_tokens) for i, p in enumerate(table.params)]


def _replay_dense(speculator: SuffixSpeculator, table: ParamTable, first: int, length: int,
                  steps: np.ndarray, drafted: np.ndarray, accepted: np.ndarray) -> None:
    draft_at = np.zeros((length, table.size), dtype=np.int32)
    accept_at = np.zeros((length, table.size), dtype=np.int32)
    for position in range(first, length):
        draft_at[position], accept_at[position] = table.choose(speculator.candidates(position, table))
    sets = np.arange(table.size) if first < length else np.arange(0)
    position_of = np.full(table.size, first, dtype=np.int64)
    while sets.size:
        at = position_of[sets]
        n, ok = draft_at[at, sets], accept_at[at, sets]
        steps[sets] += 1
        drafted[sets] += n
        accepted[sets] += ok
        position_of[sets] = at + ok + 1
        sets = sets[position_of[sets] < length]


def _replay_sparse(speculator: SuffixSpeculator, table: ParamTable, first: int, length: int,
                   steps: np.ndarray, drafted: np.ndarray, accepted: np.ndarray) -> None:
    position_of = [first] * table.size
    seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i in range(table.size):
        while position_of[i] < length:
            position = position_of[i]
            result = seen.get(position)
            if result is None:
                result = seen[position] = table.choose(speculator.candidates(position, table))
            n, ok = int(result[0][i]), int(result[1][i])
            steps[i] += 1
            drafted[i] += n
            accepted[i] += ok
            position_of[i] = position + ok + 1

"""The suffix tree of SuffixDecoding, kept implicitly over a token buffer.

A node of the tree is a string s of at most `max_depth` tokens; its count is the number of occurrences of s
in the indexed sequences, and its children are the tokens that follow those occurrences. That is what the
explicit tree of arctic-inference 0.3.0 (csrc/suffix_decoding) stores; here the counts are computed on
demand from the occurrences (numpy over a sorted unigram index), so memory is the tokens themselves and one
index entry per token, whatever the depth. Queries only; which draft wins is speculator.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEPARATOR = -1  # written after each sequence: never equal to a token, so no match crosses two sequences
HIDDEN = -2  # a reserved place of a sequence still being generated (see `reveal`); like SEPARATOR, never matched
_DIRECT_MATCH_ROWS = 64  # at or below this many occurrences, the remaining match lengths are found at once
_FEW_MATCH_ROWS = 8  # at or below this many, one occurrence at a time
_MIN_UNINDEXED_TOKENS = 4096  # the unindexed tail is scanned linearly; re-sort once it outgrows this ...
_UNINDEXED_SHARE = 0.125  # ... and this share of the indexed tokens


@dataclass(frozen=True)
class MatchGroup:
    """Match lengths `match_len_lo`..`match_len_hi` (tokens, inclusive) whose matched strings (the last
    match_len tokens of the context) occur at the same places: `ends`, sorted buffer positions of each
    occurrence's last token. Its node count is len(ends)."""

    match_len_lo: int
    match_len_hi: int
    ends: np.ndarray


class SuffixIndex:
    """Token sequences in one buffer (each followed by SEPARATOR), answering the suffix tree's queries.

    Sequences are added at the end and evicted from the front (FIFO, as arctic-inference evicts cached
    responses); evicted tokens are dropped from memory once they outnumber the live ones. Positions are
    buffer offsets (`offset_shift` counts how far compaction moved them); `visible_end` in queries hides
    tokens at or past it (a response's future). Sequences served concurrently are added as HIDDEN places and
    revealed token by token (`reveal`), so several of them grow at once and none shows its future.
    """

    def __init__(self, max_depth: int) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        self.max_depth = max_depth
        self._buf = np.empty(1024, dtype=np.int32)
        self._size = 0
        self._live_start = 0
        self._starts: list[int] = []  # live sequences' start offsets, oldest first
        self._indexed_end = 0
        self._sorted_tokens = np.empty(0, dtype=np.int32)
        self._sorted_positions = np.empty(0, dtype=np.int64)
        self._late: list[int] = []  # revealed positions below _indexed_end (sorted under HIDDEN, not their token)
        self._late_array: np.ndarray | None = None  # _late as an array, rebuilt when it grew
        self.offset_shift = 0  # positions compaction has subtracted so far

    # ---- contents ---------------------------------------------------------------------------------
    @property
    def sequence_count(self) -> int:
        return len(self._starts)

    @property
    def live_token_count(self) -> int:
        """Tokens of the live sequences, separators included."""
        return self._size - self._live_start

    @property
    def buffer_token_capacity(self) -> int:
        return int(self._buf.size)

    @property
    def live_start(self) -> int:
        """Buffer offset of the oldest live sequence's first token."""
        return self._live_start

    @property
    def size(self) -> int:
        """Buffer offset one past the newest sequence's separator."""
        return self._size

    @property
    def last_start(self) -> int:
        """Buffer offset of the newest sequence's first token."""
        return self._starts[-1]

    def tokens(self, start: int, end: int) -> np.ndarray:
        """A copy of the buffer's tokens at offsets start..end-1."""
        return self._buf[start:end].copy()

    def add_sequence(self, tokens: np.ndarray, index_tokens: int | None = None) -> int:
        """Append a sequence (1-D int array of token ids >= 0); returns its start offset. `index_tokens`:
        how many of its leading tokens to sort into the index now (default none: they are scanned until the
        next re-sort); a long prompt is worth indexing, a response visible one token at a time is not."""
        threshold = max(_MIN_UNINDEXED_TOKENS, _UNINDEXED_SHARE * (self._indexed_end - self._live_start))
        if self._size - self._indexed_end > threshold or len(self._late) > threshold:
            self._reindex(self._size)
        n = int(tokens.size)
        self._reserve(n + 1)
        start = self._size
        self._buf[start:start + n] = tokens
        self._buf[start + n] = SEPARATOR
        self._size += n + 1
        self._starts.append(start)
        if index_tokens:
            self._reindex(start + min(index_tokens, n))
        return start

    def reveal(self, position: int, tokens: np.ndarray) -> None:
        """Write `tokens` (token ids >= 0) over HIDDEN places from buffer offset `position` on; places
        already evicted are skipped. Raises ValueError past the sequence's reserved places."""
        n = int(tokens.size)
        if n == 0 or position + n <= self._live_start:
            return
        if position < self._live_start:
            tokens, position = tokens[self._live_start - position:], self._live_start
            n = int(tokens.size)
        if position + n > self._size or (self._buf[position:position + n] != HIDDEN).any():
            raise ValueError(f"reveal of {n} tokens at {position}: not reserved HIDDEN places")
        self._buf[position:position + n] = tokens
        if position < self._indexed_end:
            self._late.extend(range(position, min(position + n, self._indexed_end)))

    def evict_oldest(self) -> None:
        """Forget the oldest sequence: its occurrences no longer count."""
        self._starts.pop(0)
        self._live_start = self._starts[0] if self._starts else self._size
        if self._live_start > max(self._size - self._live_start, 1 << 16):
            self._compact()

    def _reserve(self, extra: int) -> None:
        if self._size + extra <= self._buf.size:
            return
        capacity = max(2 * self._buf.size, self._size + extra)
        grown = np.empty(capacity, dtype=np.int32)
        grown[:self._size] = self._buf[:self._size]
        self._buf = grown

    def _compact(self) -> None:
        shift = self._live_start
        live = self._buf[shift:self._size].copy()
        self._buf = np.empty(max(1024, 2 * live.size), dtype=np.int32)
        self._buf[:live.size] = live
        self._size = live.size
        self._starts = [s - shift for s in self._starts]
        self.offset_shift += shift
        self._live_start = 0
        self._indexed_end = 0
        self._reindex(self._size)

    def _reindex(self, end: int) -> None:
        tokens = self._buf[self._live_start:end]
        order = np.argsort(tokens, kind="stable")  # stable: each token's positions stay ascending
        self._sorted_tokens = tokens[order]
        self._sorted_positions = order.astype(np.int64) + self._live_start
        self._indexed_end = end
        self._late = []  # every revealed place below `end` is sorted under its token now

    # ---- queries ----------------------------------------------------------------------------------
    def occurrences(self, token: int, visible_end: int) -> np.ndarray:
        """Ascending live positions < visible_end holding `token`."""
        visible_end = min(visible_end, self._size)
        lo = np.searchsorted(self._sorted_tokens, token, side="left")
        hi = np.searchsorted(self._sorted_tokens, token, side="right")
        indexed = self._sorted_positions[lo:hi]
        if indexed.size and indexed[0] < self._live_start:
            indexed = indexed[np.searchsorted(indexed, self._live_start):]
        if indexed.size and indexed[-1] >= visible_end:
            indexed = indexed[:np.searchsorted(indexed, visible_end)]
        if self._late:
            if self._late_array is None or self._late_array.size != len(self._late):
                self._late_array = np.asarray(self._late, dtype=np.int64)
            late = self._late_array
            late = late[(late >= self._live_start) & (late < visible_end)]
            late = late[self._buf[late] == token]
            if late.size:
                indexed = np.sort(np.concatenate((indexed, late)))
        tail_start = max(self._indexed_end, self._live_start)
        if visible_end <= tail_start:
            return indexed
        tail = np.flatnonzero(self._buf[tail_start:visible_end] == token) + tail_start
        return np.concatenate((indexed, tail)) if indexed.size else tail

    def match(self, context: np.ndarray, visible_end: int) -> list[MatchGroup]:
        """Every match length 1 <= m < min(len(context), max_depth + 1) for which the last m context
        tokens occur among the visible tokens, grouped by identical occurrences, shortest first (empty when
        not even the last token occurs). As arctic-inference, a match never uses the whole context."""
        visible_end = min(visible_end, self._size)
        max_len = min(int(context.size), self.max_depth + 1) - 1
        if max_len < 1:
            return []
        ends = self.occurrences(int(context[-1]), visible_end)
        if ends.size == 0:
            return []
        buf, live = self._buf, self._live_start
        groups: list[MatchGroup] = []
        group_lo, m = 1, 1
        # Long occurrence lists (short, common strings) narrow one match length at a time ...
        while ends.size > _DIRECT_MATCH_ROWS and m < max_len:
            before = ends - m
            keep = (before >= live) & (buf[np.maximum(before, 0)] == context[-m - 1])
            if not keep.all():
                groups.append(MatchGroup(group_lo, m, ends))
                group_lo = m + 1
                ends = ends[keep]
                if ends.size == 0:
                    return groups
            m += 1
        if m == max_len:
            groups.append(MatchGroup(group_lo, m, ends))
            return groups
        # ... a few occurrences get all their match lengths at once: compare them leftwards with the context.
        if ends.size <= _FEW_MATCH_ROWS:  # one slice comparison each (cheaper than the matrix below)
            reversed_context = context[::-1]
            lengths = []
            for end in ends.tolist():
                lo = max(live, end - max_len + 1)
                if lo > end - m:
                    lengths.append(m)
                    continue
                differ = np.flatnonzero(buf[lo:end - m + 1][::-1] != reversed_context[m:m + end - m + 1 - lo])
                lengths.append(m + (int(differ[0]) if differ.size else end - m + 1 - lo))
            for length in sorted(set(lengths)):
                groups.append(MatchGroup(group_lo, length,
                                         ends if length == min(lengths) else ends[np.asarray(lengths) >= length]))
                group_lo = length + 1
            return groups
        offsets = np.arange(m, max_len, dtype=np.int64)
        before = ends[:, None] - offsets[None, :]
        wanted = context[::-1][offsets]  # context[-k - 1] for each offset k
        same = (before >= live) & (buf[np.maximum(before, 0)] == wanted[None, :])
        agreeing = np.where(same.all(axis=1), offsets.size, same.argmin(axis=1))
        match_lens = m + agreeing  # per occurrence, the longest match ending there
        for length in np.unique(match_lens).tolist():
            groups.append(MatchGroup(group_lo, length, ends[match_lens >= length]))
            group_lo = length + 1
        return groups

    def greedy_path(self, ends: np.ndarray, max_tokens: int, visible_end: int,
                    ) -> tuple[np.ndarray, np.ndarray]:
        """From the node whose occurrences end at `ends`, follow the most frequent child up to `max_tokens`
        times: (tokens int32 (L,), probabilities float64 (L,), non-increasing), the probability of a token
        being the product of count(child) / count(parent) along the path (SuffixDecoding's estimate).
        Ties go to the child that reached its count first, as arctic-inference orders siblings."""
        buf = self._buf
        visible_end = min(visible_end, self._size)
        out_tokens: list[int] = []
        out_probs: list[float] = []
        prob = 1.0
        alive = ends
        while len(out_tokens) < max_tokens:
            if alive.size == 1:  # one occurrence left: its continuation, at an unchanged probability
                first = int(alive[0]) + 1
                seg = buf[first:min(visible_end, first + max_tokens - len(out_tokens))]
                stop = np.flatnonzero(seg < 0)  # SEPARATOR or HIDDEN
                if stop.size:
                    seg = seg[:stop[0]]
                out_tokens.extend(seg.tolist())
                out_probs.extend([prob] * seg.size)
                break
            nxt = alive + 1
            nxt = nxt[nxt < visible_end]
            if nxt.size == 0:
                break
            following = buf[nxt]
            usable = following >= 0  # neither SEPARATOR nor HIDDEN
            if not usable.all():
                nxt, following = nxt[usable], following[usable]
                if nxt.size == 0:
                    break
            first_token = following[0]
            if (following == first_token).all():
                token, count = int(first_token), int(following.size)
            else:
                token, count = _mode_first_reached(following)
            prob *= count / alive.size
            out_tokens.append(token)
            out_probs.append(prob)
            alive = nxt[following == token]
        return np.asarray(out_tokens, dtype=np.int32), np.asarray(out_probs, dtype=np.float64)


def _mode_first_reached(tokens: np.ndarray) -> tuple[int, int]:
    """The most frequent value of `tokens` (in arrival order) and its count; among equals, the one whose
    count-th occurrence comes first."""
    values, counts = np.unique(tokens, return_counts=True)
    best = int(counts.max())
    tied = values[counts == best]
    if tied.size == 1:
        return int(tied[0]), best
    reached = [int(np.flatnonzero(tokens == v)[best - 1]) for v in tied]
    return int(tied[int(np.argmin(reached))]), best

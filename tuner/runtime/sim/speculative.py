"""Acceptance models for speculative decoding: how many draft tokens a verify pass accepts.

EAGLE / EAGLE3 / NEXTN / STANDALONE draft with a model: per-token acceptance is geometric (p ~0.7-0.8,
higher for repetitive text). SUFFIX and NGRAM draft from text already seen: a suffix match of the
request's context against its own prompt+output and against previous outputs, bounded by the
--speculative-suffix-* flags, checked against the tokens the simulated model really produces next.
Costs of drafting and verifying are cost.py's job, not this module's.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tuner.runtime.sim.generation import TokenGenerator, digest_seed

EAGLE_FAMILY = ("EAGLE", "EAGLE3", "NEXTN", "STANDALONE")
MODEL_FREE = ("NGRAM", "SUFFIX")
ALGORITHMS = EAGLE_FAMILY + MODEL_FREE
# Per-token acceptance relative to the model's own MTP head.
ALGORITHM_ACCEPT_SHIFT = {"EAGLE": 0.0, "NEXTN": 0.0, "EAGLE3": 0.05, "STANDALONE": -0.07}
CANDIDATES_PER_LOOKUP = 16
GLOBAL_TOKEN_BUDGET = 4_000_000
_SEP = -1


class SpecRequest(Protocol):
    rid: str
    prompt_ids: list[int]
    output_ids: list[int]
    generator: TokenGenerator


class Speculator(Protocol):
    algorithm: str
    num_draft_tokens: int  # query tokens per sequence in one verify pass

    def on_start(self, req: SpecRequest) -> None: ...

    def on_tokens(self, req: SpecRequest, new_ids: Sequence[int]) -> None: ...

    def on_finish(self, req: SpecRequest) -> None: ...

    def accepted_drafts(self, req: SpecRequest, max_accept: int) -> int:
        """Draft tokens accepted by this verify pass (the bonus token is not counted)."""
        ...


class GeometricSpeculator:
    """Model-based drafting: each draft position is accepted with probability p if all before it were."""

    def __init__(
        self,
        algorithm: str,
        base_accept_prob: float,
        num_steps: int,
        topk: int,
        num_draft_tokens: int,
        seed: int,
    ) -> None:
        self.algorithm = algorithm
        self.num_draft_tokens = num_draft_tokens
        self.max_accept = max(0, min(num_steps, num_draft_tokens - 1))
        self.base_accept_prob = min(
            0.97, max(0.05, base_accept_prob + ALGORITHM_ACCEPT_SHIFT.get(algorithm, 0.0))
        )
        # A tree of topk branches per level catches some of the first choice's misses.
        self._width = max(1.0, min(float(topk), (num_draft_tokens - 1) / max(1, num_steps)))
        self._seed = seed
        self._rngs: dict[str, random.Random] = {}
        self._probs: dict[str, float] = {}

    def accept_prob(self, repetitiveness: float) -> float:
        p = self.base_accept_prob + (0.95 - self.base_accept_prob) * 0.3 * repetitiveness
        return 1.0 - (1.0 - p) * 0.55 ** (self._width - 1.0)

    def on_start(self, req: SpecRequest) -> None:
        self._rngs[req.rid] = random.Random(digest_seed(self._seed + 0x5EED, req.prompt_ids))
        self._probs[req.rid] = self.accept_prob(req.generator.repetitiveness)

    def on_tokens(self, req: SpecRequest, new_ids: Sequence[int]) -> None:
        pass

    def on_finish(self, req: SpecRequest) -> None:
        self._rngs.pop(req.rid, None)
        self._probs.pop(req.rid, None)

    def accepted_drafts(self, req: SpecRequest, max_accept: int) -> int:
        if req.rid not in self._rngs:
            self.on_start(req)
        rng, p = self._rngs[req.rid], self._probs[req.rid]
        limit = min(self.max_accept, max_accept)
        accepted = 0
        while accepted < limit and rng.random() < p:
            accepted += 1
        return accepted


class _ChainIndex:
    """A token buffer with a hash-chain index of 2-token anchors (as in LZ77 matchers).

    Position i is indexed under the anchor (tokens[i-2], tokens[i-1]): the text after that anchor
    continues at i. Sequences are separated by _SEP so matches never cross them.
    """

    def __init__(self, table_bits: int | None = None) -> None:
        self.tokens = array("q")
        self.prev = array("q")
        self.base = 0  # positions below base were evicted
        self._mask = (1 << table_bits) - 1 if table_bits else 0
        self._table = array("q", [-1]) * (1 << table_bits) if table_bits else None
        self._heads: dict[int, int] = {}

    def _key(self, a: int, b: int) -> int:
        return ((a * 1_000_003) ^ b) & self._mask if self._table is not None else (a << 32) ^ b

    def append(self, new_ids: Sequence[int]) -> None:
        tokens, prev = self.tokens, self.prev
        for t in new_ids:
            i = len(tokens)
            tokens.append(t)
            link = -1
            if i >= 2 and tokens[i - 1] != _SEP and tokens[i - 2] != _SEP and t != _SEP:
                key = self._key(tokens[i - 2], tokens[i - 1])
                if self._table is not None:
                    link = self._table[key]
                    self._table[key] = i
                else:
                    link = self._heads.get(key, -1)
                    self._heads[key] = i
            prev.append(link)

    def candidates(self, a: int, b: int, limit: int) -> list[int]:
        key = self._key(a, b)
        pos = self._table[key] if self._table is not None else self._heads.get(key, -1)
        found: list[int] = []
        tokens = self.tokens
        while pos >= self.base and len(found) < limit:
            if tokens[pos - 2] == a and tokens[pos - 1] == b:
                found.append(pos)
            pos = self.prev[pos]
        return found

    def rebuild_from(self, start: int) -> None:
        """Drop everything before `start` (compaction after evictions)."""
        kept = self.tokens[start:]
        self.tokens, self.prev, self.base = array("q"), array("q"), 0
        if self._table is not None:
            self._table = array("q", [-1]) * (self._mask + 1)
        self._heads = {}
        self.append(kept)


@dataclass(frozen=True)
class SuffixParams:
    num_draft_tokens: int
    max_depth: int = 64
    max_spec_factor: float = 1.0
    max_spec_offset: float = 0.0
    min_token_prob: float = 0.1
    max_cached_requests: int = 10000


def _match_length(ctx: array, seq: array, pos: int, cap: int) -> int:
    """Longest k <= cap with ctx[-k:] == seq[pos-k:pos] (the anchor guarantees k >= 2)."""
    hi = min(cap, pos, len(ctx))
    if hi <= 2:
        return min(2, hi)
    if ctx[len(ctx) - hi :] == seq[pos - hi : pos]:
        return hi
    lo = 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ctx[len(ctx) - mid :] == seq[pos - mid : pos]:
            lo = mid
        else:
            hi = mid
    return lo


class SuffixSpeculator:
    """Model-free drafting from a suffix match (SUFFIX; NGRAM with its own fixed bounds)."""

    def __init__(self, algorithm: str, params: SuffixParams) -> None:
        self.algorithm = algorithm
        self.num_draft_tokens = params.num_draft_tokens
        self.params = params
        self._local: dict[str, _ChainIndex] = {}
        self._global = _ChainIndex(table_bits=20)
        self._global_spans: deque[tuple[int, int]] = deque()  # (start, end) per cached output
        self.drafted_tokens = 0

    def on_start(self, req: SpecRequest) -> None:
        index = _ChainIndex()
        index.append(req.prompt_ids)
        index.append(req.output_ids)
        self._local[req.rid] = index

    def on_tokens(self, req: SpecRequest, new_ids: Sequence[int]) -> None:
        index = self._local.get(req.rid)
        if index is not None:
            index.append(new_ids)

    def on_finish(self, req: SpecRequest) -> None:
        self._local.pop(req.rid, None)
        if not req.output_ids or self.params.max_cached_requests <= 0:
            return
        g = self._global
        start = len(g.tokens)
        g.append(req.output_ids)
        g.append((_SEP,))
        self._global_spans.append((start, len(g.tokens)))
        live = len(g.tokens) - g.base
        while self._global_spans and (
            len(self._global_spans) > self.params.max_cached_requests or live > GLOBAL_TOKEN_BUDGET
        ):
            _, end = self._global_spans.popleft()
            g.base = end
            live = len(g.tokens) - g.base
        if g.base > GLOBAL_TOKEN_BUDGET // 2 and g.base > len(g.tokens) // 2:
            shift = g.base
            g.rebuild_from(shift)
            self._global_spans = deque((s - shift, e - shift) for s, e in self._global_spans)

    def draft(self, req: SpecRequest, max_len: int) -> list[int]:
        """The draft for the request's next tokens: follow the deepest suffix match while likely enough."""
        p = self.params
        ctx = self._local.get(req.rid)
        if ctx is None:
            self.on_start(req)
            ctx = self._local[req.rid]
        n = len(ctx.tokens)
        if n < 2 or max_len <= 0:
            return []
        a, b = ctx.tokens[n - 2], ctx.tokens[n - 1]
        found: list[tuple[int, array, int]] = []
        for index in (ctx, self._global):
            for pos in index.candidates(a, b, CANDIDATES_PER_LOOKUP):
                if pos < len(index.tokens):
                    found.append(
                        (_match_length(ctx.tokens, index.tokens, pos, p.max_depth), index.tokens, pos)
                    )
        if not found:
            return []
        best = max(m for m, _, _ in found)
        match_len = min(best, max(2, p.max_depth - (self.num_draft_tokens - 1)))
        spec_cap = min(
            self.num_draft_tokens - 1,
            max_len,
            p.max_depth - match_len,
            math.floor(p.max_spec_factor * match_len + p.max_spec_offset),
        )
        live = [(seq, pos) for m, seq, pos in found if m >= match_len]
        out: list[int] = []
        prob = 1.0
        for j in range(max(0, spec_cap)):
            nexts = [seq[pos + j] for seq, pos in live if pos + j < len(seq) and seq[pos + j] != _SEP]
            if not nexts:
                break
            token, count = Counter(nexts).most_common(1)[0]
            prob *= count / len(live)
            if prob < p.min_token_prob:
                break
            out.append(token)
            live = [(seq, pos) for seq, pos in live if pos + j < len(seq) and seq[pos + j] == token]
        return out

    def accepted_drafts(self, req: SpecRequest, max_accept: int) -> int:
        proposal = self.draft(req, max_accept)
        self.drafted_tokens += len(proposal)
        if not proposal:
            return 0
        truth = req.generator.peek(len(proposal))
        accepted = 0
        for d, t in zip(proposal, truth, strict=True):
            if d != t:
                break
            accepted += 1
        return accepted


def ngram_params(num_draft_tokens: int) -> SuffixParams:
    """NGRAM: match windows up to 12 tokens, draft as many tokens as the verify width allows."""
    return SuffixParams(
        num_draft_tokens=num_draft_tokens,
        max_depth=12 + num_draft_tokens,
        max_spec_factor=1e9,
        max_spec_offset=0.0,
        min_token_prob=0.0,
        max_cached_requests=10000,
    )

"""Acceptance models for speculative decoding: how many draft tokens a verify pass accepts.

EAGLE / EAGLE3 / NEXTN / STANDALONE draft with a model: per-token acceptance is geometric (p ~0.7-0.8,
higher for repetitive text). SUFFIX and NGRAM draft from text already seen, with the offline replay's SuffixDecoding speculator
(tuner/suffix_decoding): a suffix match of the request's context against its own prompt+output and
against earlier and concurrent outputs, bounded by the --speculative-suffix-* flags, checked against the
tokens the simulated model really produces next.
Costs of drafting and verifying are cost.py's job, not this module's.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from tuner.runtime.sim.generation import TokenGenerator, digest_seed
from tuner.suffix_decoding.params import DEFAULT_MAX_CACHED_REQUESTS, SuffixParams
from tuner.suffix_decoding.speculator import ServingSpeculator

EAGLE_FAMILY = ("EAGLE", "EAGLE3", "NEXTN", "STANDALONE")
MODEL_FREE = ("NGRAM", "SUFFIX")
ALGORITHMS = EAGLE_FAMILY + MODEL_FREE
# Per-token acceptance relative to the model's own MTP head.
ALGORITHM_ACCEPT_SHIFT = {"EAGLE": 0.0, "NEXTN": 0.0, "EAGLE3": 0.05, "STANDALONE": -0.07}
GLOBAL_TOKEN_BUDGET = 4_000_000  # the global tree's memory bound in the simulator (tokens), beside the count cap


class SpecRequest(Protocol):
    rid: str
    prompt_ids: list[int]
    output_ids: list[int]
    max_new_tokens: int
    internal: bool
    generator: TokenGenerator


class Speculator(Protocol):
    algorithm: str
    num_draft_tokens: int  # query tokens per sequence in one verify pass

    def on_start(self, req: SpecRequest) -> None: ...

    def on_tokens(self, req: SpecRequest, new_ids: Sequence[int]) -> None: ...

    def on_finish(self, req: SpecRequest) -> None: ...

    def reset(self) -> None:
        """Forget what earlier requests taught the drafter (a cache flush)."""
        ...

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

    def reset(self) -> None:
        pass  # a draft model keeps nothing from earlier requests

    def accepted_drafts(self, req: SpecRequest, max_accept: int) -> int:
        if req.rid not in self._rngs:
            self.on_start(req)
        rng, p = self._rngs[req.rid], self._probs[req.rid]
        limit = min(self.max_accept, max_accept)
        accepted = 0
        while accepted < limit and rng.random() < p:
            accepted += 1
        return accepted


class TreeSpeculator:
    """Model-free drafting (SUFFIX; NGRAM with its fixed bounds) by the speculator the offline replay uses
    (tuner.suffix_decoding's ServingSpeculator), over the token ids of the requests served: each request's
    tree (prompt and output so far) and the global tree over earlier and concurrent outputs. Drafts are
    checked against the tokens the simulated model really produces next. Health checks are not speculated."""

    def __init__(self, algorithm: str, params: SuffixParams,
                 max_cached_requests: int = DEFAULT_MAX_CACHED_REQUESTS) -> None:
        self.algorithm = algorithm
        self.num_draft_tokens = params.num_draft_tokens
        self.params = params
        self._serving = ServingSpeculator(params, max_cached_requests, max_cached_tokens=GLOBAL_TOKEN_BUDGET)
        self.drafted_tokens = 0

    @property
    def cached_responses(self) -> int:
        return self._serving.cached_responses

    def reset(self) -> None:
        self._serving.reset()

    def on_start(self, req: SpecRequest) -> None:
        if req.internal:
            return
        if not self._serving.is_serving(req.rid):  # a retracted request keeps its trees
            self._serving.start_request(req.rid, req.prompt_ids, req.max_new_tokens)
        self._serving.add_tokens(req.rid, req.output_ids[self._serving.response_tokens(req.rid):])

    def on_tokens(self, req: SpecRequest, new_ids: Sequence[int]) -> None:
        if self._serving.is_serving(req.rid):
            self._serving.add_tokens(req.rid, new_ids)

    def on_finish(self, req: SpecRequest) -> None:
        self._serving.finish_request(req.rid)

    def accepted_drafts(self, req: SpecRequest, max_accept: int) -> int:
        if not self._serving.is_serving(req.rid):
            return 0
        truth = req.generator.peek(max(0, min(max_accept, self.num_draft_tokens - 1)))
        drafted, accepted = self._serving.verify(req.rid, truth)
        self.drafted_tokens += drafted
        return accepted


def ngram_params(num_draft_tokens: int) -> SuffixParams:
    """NGRAM: match windows up to 12 tokens, draft as many tokens as the verify width allows."""
    return SuffixParams(
        cache_max_depth=12 + num_draft_tokens,
        max_spec_factor=1e9,
        max_spec_offset=0.0,
        min_token_prob=0.0,
        num_draft_tokens=num_draft_tokens,
    )

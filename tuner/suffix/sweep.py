"""The parameter sweep: a grid of suffix-decoding parameter sets, replayed in one pass and ranked by the
estimated decode speed-up of the verify-cost model (then by acceptance). The engine defaults are always
among the sets, so every ranking says how far the best is from them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.suffix.cost import VerifyCostModel
from tuner.suffix.replay import ReplayFigures, replay
from tuner.suffix_decoding.params import DEFAULT_MAX_CACHED_REQUESTS, ENGINE_DEFAULTS, SuffixParams
from tuner.suffix_decoding.traces import TraceRequest


@dataclass(frozen=True)
class SweepGrid:
    """Values per parameter; the sweep replays their Cartesian product (plus the engine defaults)."""

    depths: tuple[int, ...] = (16, 32, 64)
    max_spec_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    max_spec_offsets: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0)
    min_token_probs: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    num_draft_tokens: tuple[int, ...] = (4, 8, 12, 16)

    def param_sets(self) -> list[SuffixParams]:
        """Every combination, the engine defaults included, each once; raises ValueError on bad values."""
        product = [SuffixParams(*values) for values in itertools.product(
            self.depths, self.max_spec_factors, self.max_spec_offsets, self.min_token_probs,
            self.num_draft_tokens)]
        return list(dict.fromkeys([*product, ENGINE_DEFAULTS]))


@dataclass(frozen=True)
class RankedParams:
    """One parameter set's figures and estimated decode speed-up (x, over no speculation)."""

    rank: int
    figures: ReplayFigures
    speedup: float

    @property
    def params(self) -> SuffixParams:
        return self.figures.params

    def to_json(self) -> dict[str, Any]:
        f, p = self.figures, self.figures.params
        return {
            "rank": self.rank,
            "params": {"cache_max_depth": p.cache_max_depth, "max_spec_factor": p.max_spec_factor,
                       "max_spec_offset": p.max_spec_offset, "min_token_prob": p.min_token_prob,
                       "num_draft_tokens": p.num_draft_tokens},
            "engine_defaults": p == ENGINE_DEFAULTS,
            "acceptance_rate": round(f.acceptance_rate, 6),
            "accepted_tokens_per_step": round(f.accepted_per_step, 6),
            "tokens_per_step": round(f.tokens_per_step, 6),
            "estimated_speedup": round(self.speedup, 6),
            "verify_steps": f.verify_steps, "drafted_tokens": f.drafted_tokens,
            "accepted_tokens": f.accepted_tokens, "response_tokens": f.response_tokens,
            "requests": f.requests,
        }


def rank(figures: Sequence[ReplayFigures], cost: VerifyCostModel) -> list[RankedParams]:
    """Best first: speed-up, then acceptance rate, then the narrower verify width, then the fewest values
    changed from the engine defaults."""
    ordered = sorted(figures, key=lambda f: (-cost.speedup(f), -f.acceptance_rate,
                                             f.params.num_draft_tokens, _changes(f.params), f.params))
    return [RankedParams(i + 1, f, cost.speedup(f)) for i, f in enumerate(ordered)]


def _changes(params: SuffixParams) -> int:
    return sum(getattr(params, field) != getattr(ENGINE_DEFAULTS, field) for field in (
        "cache_max_depth", "max_spec_factor", "max_spec_offset", "min_token_prob", "num_draft_tokens"))


def sweep(requests: Sequence[TraceRequest], grid: SweepGrid, cost: VerifyCostModel, *,
          max_cached_requests: int = DEFAULT_MAX_CACHED_REQUESTS,
          on_request: Callable[[TraceRequest], None] | None = None) -> list[RankedParams]:
    """Replay `requests` for every set of `grid` (one pass) and rank them."""
    figures = replay(requests, grid.param_sets(), max_cached_requests=max_cached_requests,
                     on_request=on_request)
    return rank(figures, cost)

"""Verify-cost model: the decode speed-up a replay's figures imply.

One speculative decode step drafts on the CPU, then verifies `num_draft_tokens` tokens per sequence (every
draft padded to that width, as the SGLang fork does). Relative to a plain decode step of time t1:
    step time = t1 + verify_token_s x (num_draft_tokens - 1) + draft_s
    speed-up  = tokens per verify step x t1 / step time
Arithmetic only; the figures come from replay.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.suffix.replay import ReplayFigures


@dataclass(frozen=True)
class VerifyCostModel:
    """Defaults: a GLM-4.7-FP8 TP8 decode step on H200 near 20 ms (the Novita fork's reported TPOT is
    19.6-25 ms); each extra verified token per sequence adds 0.8 ms (4 %: more query tokens through the MoE
    layers of a memory-bound step at batch sizes around 32-64); suffix drafting costs 0.15 ms + 10 us per
    sequence on the CPU, 0.8 ms at 64 sequences (the simulator's constants, tuner/runtime/sim/cost.py)."""

    decode_step_s: float = 0.020
    verify_token_s: float = 0.0008
    draft_s: float = 0.0008

    def __post_init__(self) -> None:
        if self.decode_step_s <= 0 or self.verify_token_s < 0 or self.draft_s < 0:
            raise ValueError("decode_step_s must be > 0; verify_token_s and draft_s >= 0")

    def step_s(self, num_draft_tokens: int) -> float:
        """Seconds of one speculative decode step of verify width `num_draft_tokens`."""
        return self.decode_step_s + self.verify_token_s * (num_draft_tokens - 1) + self.draft_s

    def speedup(self, figures: ReplayFigures) -> float:
        """Decode speed-up over no speculation (> 1 is faster); 0 for a trace without response tokens."""
        if figures.verify_steps == 0:
            return 0.0
        return figures.tokens_per_step * self.decode_step_s / self.step_s(figures.params.num_draft_tokens)

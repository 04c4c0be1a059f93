"""Drift rules: how far live traffic is from the workload a deployment was tuned for, against thresholds
users set. Pure arithmetic on two `WorkloadModel`s; storing, queueing and scheduling are `tuner.workload.watch`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.workload_model import WorkloadModel, js_divergence


@dataclass(frozen=True)
class DriftThresholds:
    """A score at or above its threshold is drift. Defaults suit windows of a few hundred requests."""

    max_length_js: float = 0.2  # Jensen-Shannon divergence (base 2) of prompt or output lengths
    max_rate_change: float = 0.5  # |live / baseline - 1| of the mean arrival rate
    max_prefix_hit_change: float = 0.2  # absolute change of the prefix-cache hit ratio
    max_accept_drop: float = 0.15  # relative drop of the speculative accept length
    ttft_slo_s: float | None = None  # with min_slo_attainment: share of requests with TTFT <= this
    itl_slo_s: float | None = None  # ... and of tokens with ITL <= this
    min_slo_attainment: float = 0.95


@dataclass(frozen=True)
class DriftReport:
    scores: dict[str, float]  # name -> score (the unit of its threshold)
    ratios: dict[str, float]  # name -> score / threshold
    reasons: tuple[str, ...]  # one sentence per rule that fired

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    @property
    def drift_score(self) -> float:
        """The largest score / threshold ratio: 1 or more means drift."""
        return max(self.ratios.values(), default=0.0)


def compare(baseline: WorkloadModel, live: WorkloadModel, t: DriftThresholds) -> DriftReport:
    scores: dict[str, float] = {}
    ratios: dict[str, float] = {}
    reasons: list[str] = []

    def rule(name: str, score: float, threshold: float, reason: str) -> None:
        scores[name] = score
        ratios[name] = score / threshold if threshold > 0 else float("inf") * (score > 0)
        if score >= threshold:
            reasons.append(reason)

    js_p = js_divergence(baseline.prompt_tokens, live.prompt_tokens)
    rule("prompt_length_js", js_p, t.max_length_js,
         f"prompt lengths changed (JS {js_p:.2f} >= {t.max_length_js:g}; mean {baseline.prompt_tokens.mean_tokens:.0f}"
         f" -> {live.prompt_tokens.mean_tokens:.0f} tokens)")
    js_o = js_divergence(baseline.output_tokens, live.output_tokens)
    rule("output_length_js", js_o, t.max_length_js,
         f"output lengths changed (JS {js_o:.2f} >= {t.max_length_js:g}; mean {baseline.output_tokens.mean_tokens:.0f}"
         f" -> {live.output_tokens.mean_tokens:.0f} tokens)")
    change = abs(live.rate_rps / baseline.rate_rps - 1) if baseline.rate_rps > 0 else 0.0
    rule("rate_change", change, t.max_rate_change,
         f"arrival rate changed by {change:.0%} ({baseline.rate_rps:.2f} -> {live.rate_rps:.2f} req/s)")
    if baseline.prefix_cache_hit_ratio is not None and live.prefix_cache_hit_ratio is not None:
        d = abs(live.prefix_cache_hit_ratio - baseline.prefix_cache_hit_ratio)
        rule("prefix_hit_change", d, t.max_prefix_hit_change,
             f"prefix-cache hit ratio moved {baseline.prefix_cache_hit_ratio:.2f} -> "
             f"{live.prefix_cache_hit_ratio:.2f}")
    if baseline.spec_accept_length and live.spec_accept_length is not None:
        drop = max(0.0, 1 - live.spec_accept_length / baseline.spec_accept_length)
        rule("accept_length_drop", drop, t.max_accept_drop,
             f"speculative accept length dropped {baseline.spec_accept_length:.2f} -> {live.spec_accept_length:.2f}")
    for name, limit, hist in (("ttft", t.ttft_slo_s, live.ttft_s), ("itl", t.itl_slo_s, live.itl_s)):
        if limit is None or hist is None:
            continue
        attained = hist.fraction_within(limit)
        if attained is None:
            continue
        miss = 1 - attained
        rule(f"{name}_slo_miss", miss, 1 - t.min_slo_attainment,
             f"{name.upper()} <= {limit:g}s attained by {attained:.1%} (< {t.min_slo_attainment:.0%})")
    return DriftReport(scores, ratios, tuple(reasons))

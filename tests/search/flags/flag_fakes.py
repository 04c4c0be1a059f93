"""Test helpers: load steps, load-search results and an evaluator that needs no engine."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.search.flags.load_search import LoadSearchResult, LoadStep
from tuner.search.flags.objective import StepFigures
from tuner.search.flags.space import Candidate
from tuner.search.flags.trial import TrialOutcome


def step(load: float, *, ok: bool = True, goodput: float = 100.0, ttft: float = 0.5, tpot: float = 0.02,
         index: int = 0, throughput: float | None = None) -> LoadStep:
    latency = {f"{m}_{s}": None for m in ("ttft", "tpot", "itl", "e2e")
               for s in ("mean", "median", "p90", "p95", "p99")}
    latency.update(ttft_p99=ttft, tpot_p99=tpot)
    fig = StepFigures(latency_s=latency, output_throughput_tok_s=throughput if throughput is not None else goodput,
                      request_throughput_req_s=0 if math.isinf(load) else load,
                      goodput_tok_s=goodput if ok else 0.0, goodput_req_s=(goodput / 100) if ok else 0.0,
                      slo_attainment=1.0 if ok else 0.5,
                      slo_ratios={"ttft_p99": ttft / 2.0, "tpot_p99": tpot / 0.05}, meets_slo=ok)
    return LoadStep(index, load, "rate", 10, 10, 0, 5.0, fig)


@dataclass
class FakeEvaluator:
    """goodput(flags) -> goodput, or a failure kind string ('oom', 'crash', ...)."""

    goodput: Callable[[Mapping[str, Any]], float | str]
    calls: list[Candidate] = field(default_factory=list)
    repeats_seen: list[int] = field(default_factory=list)
    raise_on_call: int | None = None  # raise KeyboardInterrupt on this call (1-based)
    noise: Callable[[int], float] = lambda i: 0.0

    def evaluate(self, candidate: Candidate, *, repeats: int = 1) -> TrialOutcome:
        self.calls.append(candidate)
        self.repeats_seen.append(repeats)
        if self.raise_on_call is not None and len(self.calls) == self.raise_on_call:
            raise KeyboardInterrupt
        value = self.goodput(candidate.flags)
        if isinstance(value, str):
            return TrialOutcome(status="infeasible", candidate=candidate, failure_kind=value,
                                error=f"engine failed: {value}", log_tail="torch.OutOfMemoryError: ...")
        searches = []
        for r in range(repeats):
            g = value + self.noise(r)
            steps = (step(4.0, ok=g > 0, goodput=g, index=0),) if g > 0 else (step(1.0, ok=False, index=0),)
            searches.append(LoadSearchResult(steps))
        status = "ok" if value > 0 else "infeasible"
        return TrialOutcome(status=status, candidate=candidate, failure_kind=None if value > 0 else "slo",
                            searches=tuple(searches), argv=("engine", "--x"), engine_version="0.0-fake",
                            server_info={"version": "0.0-fake"}, log_path="/dev/null", log_tail="ok",
                            stage_seconds={"launch": 0.1, "measure": 0.2})

"""What a load step measured, in engine time: client percentiles, throughput and goodput, and its verdict
against the SLOs; the `Clock` that turns the simulator's wall clock into engine time.

Pure computation over client summaries; it sends no load and knows no objective (objective.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.runtime.loadgen.summary import SLO_STATS, ClientSummary, Slo

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e")


def slo_label(slo: Slo) -> str:
    return f"{slo.metric}_{slo.stat}"


@dataclass(frozen=True)
class Clock:
    """Converts what the client measures on the wall clock into engine time. The simulator runs `scale`
    times faster than real time; real engines have scale 1. SLOs, rates and results are in engine time."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise TunerError(f"time scale must be positive, got {self.scale}")

    def seconds(self, wall_s: float | None) -> float | None:
        return None if wall_s is None else wall_s * self.scale

    def per_second(self, wall_per_s: float | None) -> float | None:
        return None if wall_per_s is None else wall_per_s / self.scale

    def wall_rate(self, engine_rate: float) -> float:
        return engine_rate * self.scale

    def wall_slos(self, slos: Sequence[Slo]) -> tuple[Slo, ...]:
        return tuple(Slo(s.metric, s.stat, s.limit_s / self.scale) for s in slos)


@dataclass(frozen=True)
class StepFigures:
    """A load step's client figures in engine time, and its SLO verdict."""

    latency_s: Mapping[str, float | None]  # 'ttft_p99' -> seconds, for every metric x stat
    output_throughput_tok_s: float
    request_throughput_req_s: float
    goodput_tok_s: float
    goodput_req_s: float
    slo_attainment: float | None
    slo_ratios: Mapping[str, float | None]  # 'ttft_p99' -> measured / limit (None: nothing measured)
    meets_slo: bool


def step_figures(summary: ClientSummary, slos: Sequence[Slo], clock: Clock) -> StepFigures:
    """Engine-time figures of one step. `summary` must come from `summarize(load, clock.wall_slos(slos))`.
    The step meets the SLOs when every aggregate SLO holds, no request failed and some completed."""
    latency: dict[str, float | None] = {}
    for metric in LATENCY_METRICS:
        for stat in SLO_STATS:
            latency[f"{metric}_{stat}"] = clock.seconds(getattr(summary, f"{metric}_{stat}_s"))
    ratios: dict[str, float | None] = {}
    for slo in slos:
        value = latency[slo_label(slo)]
        ratios[slo_label(slo)] = None if value is None else value / slo.limit_s
    meets = (summary.completed > 0 and summary.failed == 0
             and all(r is not None and r <= 1.0 for r in ratios.values()))
    return StepFigures(
        latency_s=latency,
        output_throughput_tok_s=clock.per_second(summary.output_throughput_tok_s) or 0.0,
        request_throughput_req_s=clock.per_second(summary.request_throughput_req_s) or 0.0,
        goodput_tok_s=clock.per_second(summary.goodput_output_tok_s) or 0.0,
        goodput_req_s=clock.per_second(summary.goodput_req_s) or 0.0,
        slo_attainment=summary.slo_attainment,
        slo_ratios=ratios,
        meets_slo=meets,
    )

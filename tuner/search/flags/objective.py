"""What a flag search optimises: SLOs on client-side percentiles ("ttft_p99<=2s,tpot_p99<=50ms"), the
objective (goodput in output tokens/s or requests/s of requests meeting every SLO, or a Pareto front of
throughput vs p99 latency) and Optuna's constraint values. Step figures and the engine clock (the
simulator's --time-scale) are figures.py's, re-exported here.

Pure computation over client summaries and load-search results; it sends no load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tuner.errors import TunerError
from tuner.runtime.loadgen.summary import SLO_STATS, Slo, parse_slos
from tuner.search.flags.figures import LATENCY_METRICS, Clock, StepFigures, slo_label, step_figures
from tuner.search.flags.load_search import LoadSearchResult, LoadStep

__all__ = ["LATENCY_METRICS", "OBJECTIVES", "Clock", "Objective", "StepFigures", "parse_slo_text", "slo_label",
           "step_figures"]

OBJECTIVES = ("goodput", "goodput-req", "pareto")
INFEASIBLE_LATENCY_S = 1e6  # the latency a Pareto trial that met no SLO reports (it must be finite)
LAUNCH_FAILED_VIOLATION = 1.0


def parse_slo_text(text: str | None) -> tuple[Slo, ...]:
    """'ttft_p99<=2s,tpot_p99<=50ms' -> SLOs (stat defaults to p99; units s, ms, us). At least one."""
    slos = parse_slos(text)
    if not slos:
        raise TunerError("a flag search needs at least one SLO, e.g. --slo 'ttft_p99<=2s,tpot_p99<=50ms'")
    names = [f"{s.metric}_{s.stat}" for s in slos]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TunerError(f"SLO {', '.join(dupes)} is given twice")
    return slos


@dataclass(frozen=True)
class Objective:
    """`kind`: goodput (output tok/s of requests meeting every SLO, at the highest load that meets them),
    goodput-req (the same in requests/s) or pareto (that goodput up, `pareto_metric` at the lightest
    measured load down)."""

    kind: str
    slos: tuple[Slo, ...]
    pareto_metric: str = "tpot_p99"

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise TunerError(f"unknown objective {self.kind!r}; choose one of {', '.join(OBJECTIVES)}")
        if not self.slos:
            raise TunerError("an objective needs at least one SLO")
        metric, _, stat = self.pareto_metric.partition("_")
        if metric not in LATENCY_METRICS or stat not in SLO_STATS:
            raise TunerError(f"unknown latency {self.pareto_metric!r} for the Pareto front; use e.g. tpot_p99, "
                             "ttft_p99, e2e_p99")

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"] if self.kind == "pareto" else ["maximize"]

    @property
    def value_names(self) -> list[str]:
        if self.kind == "pareto":
            return ["goodput_tok_s", f"{self.pareto_metric}_s"]
        return ["goodput_req_s" if self.kind == "goodput-req" else "goodput_tok_s"]

    @property
    def constraint_names(self) -> list[str]:
        return [slo_label(s) for s in self.slos] + ["launch"]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "slos": [str(s) for s in self.slos],
                "slo_labels": [slo_label(s) for s in self.slos], "pareto_metric": self.pareto_metric,
                "directions": self.directions, "value_names": self.value_names,
                "constraint_names": self.constraint_names}

    def score(self, step: LoadStep | None) -> float:
        """The single number ranking configs (goodput or goodput-req) of a step; 0 without one."""
        if step is None:
            return 0.0
        return step.figures.goodput_req_s if self.kind == "goodput-req" else step.figures.goodput_tok_s

    def values(self, result: LoadSearchResult | None) -> list[float]:
        """Optuna values of a measured trial (or of a failed launch when `result` is None)."""
        best = result.best if result is not None else None
        primary = self.score(best)
        if self.kind != "pareto":
            return [primary]
        latency = None
        if result is not None and best is not None and result.reference is not None:
            latency = result.reference.figures.latency_s.get(self.pareto_metric)
        return [primary, INFEASIBLE_LATENCY_S if latency is None else latency]

    def constraints(self, result: LoadSearchResult | None) -> list[float]:
        """One value per SLO (measured / limit - 1; <= 0 is met) plus 'launch' (0, or 1 when the engine
        failed). A trial whose best load met the SLOs reports that step; one that met none reports its
        lightest step; a failed launch reports every constraint as violated."""
        if result is None:
            return [LAUNCH_FAILED_VIOLATION] * (len(self.slos) + 1)
        step = result.best or result.lightest
        out = []
        for slo in self.slos:
            ratio = step.figures.slo_ratios.get(slo_label(slo)) if step is not None else None
            out.append(LAUNCH_FAILED_VIOLATION if ratio is None or not math.isfinite(ratio)
                       else round(ratio - 1.0, 6))
        if result.best is None and all(c <= 0 for c in out):
            out = [max(c, 1e-3) for c in out]  # failed requests: violated though the percentiles looked fine
        return out + [0.0]

"""bench_serving-style figures from the client's request records, goodput under SLOs, and the load
generator's own lateness. Pure computation: no I/O, no engine metrics (see tuner.runtime.compare).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from tuner.errors import TunerError
from tuner.runtime.loadgen.client import LoadResult, RequestRecord

LAG_WARN_MS = 1.0  # a client later than this (p99) may be the bottleneck, not the engine

SLO_METRICS = ("ttft", "tpot", "itl", "e2e")
PER_REQUEST_SLO_METRICS = ("ttft", "tpot", "e2e")  # ITL SLOs are checked on the aggregate only
SLO_STATS = ("mean", "median", "p90", "p95", "p99")
_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_SLO_RE = re.compile(
    r"^\s*(ttft|tpot|itl|e2e)(?:_(mean|median|p90|p95|p99))?\s*<=\s*([0-9.eE+-]+)\s*(s|ms|us)\s*$"
)


@dataclass(frozen=True)
class Slo:
    """A latency limit: per request (metric <= limit_s) and on the aggregate (metric_stat <= limit_s)."""

    metric: str  # ttft | tpot | itl | e2e
    stat: str  # mean | median | p90 | p95 | p99
    limit_s: float

    @property
    def field(self) -> str:
        return f"{self.metric}_{self.stat}_s"

    def __str__(self) -> str:
        return f"{self.metric}_{self.stat}<={self.limit_s * 1e3:g}ms"


def parse_slos(text: str | None) -> tuple[Slo, ...]:
    """'ttft_p99<=2s,tpot_p99<=50ms' -> Slos. The stat defaults to p99; units s, ms or us are required."""
    if not text or not text.strip():
        return ()
    out = []
    for part in text.split(","):
        m = _SLO_RE.match(part)
        if not m:
            raise TunerError(
                f"cannot read SLO {part.strip()!r}; write e.g. ttft_p99<=2s,tpot_p99<=50ms "
                f"(metrics {', '.join(SLO_METRICS)}; stats {', '.join(SLO_STATS)}; units s, ms, us)"
            )
        metric, stat, number, unit = m.groups()
        try:
            limit = float(number) * _UNITS_S[unit]
        except ValueError:
            raise TunerError(f"SLO {part.strip()!r}: {number!r} is not a number") from None
        if not limit > 0:
            raise TunerError(f"SLO {part.strip()!r}: the limit must be positive")
        out.append(Slo(metric, stat or "p99", limit))
    return tuple(out)


@dataclass(frozen=True)
class SloCheck:
    slo: str
    limit_s: float
    value_s: float | None
    met: bool


@dataclass(frozen=True)
class ClientSummary:
    """What the client measured (bench_serving's fields, with units in the names)."""

    duration_s: float
    planned_sessions: int
    completed: int
    failed: int
    total_input_tokens: int
    total_output_tokens: int
    request_throughput_req_s: float
    input_throughput_tok_s: float
    output_throughput_tok_s: float
    total_throughput_tok_s: float
    mean_concurrency: float
    ttft_mean_s: float | None
    ttft_median_s: float | None
    ttft_p90_s: float | None
    ttft_p95_s: float | None
    ttft_p99_s: float | None
    tpot_mean_s: float | None
    tpot_median_s: float | None
    tpot_p90_s: float | None
    tpot_p95_s: float | None
    tpot_p99_s: float | None
    itl_mean_s: float | None
    itl_median_s: float | None
    itl_p90_s: float | None
    itl_p95_s: float | None
    itl_p99_s: float | None
    itl_max_s: float | None
    e2e_mean_s: float | None
    e2e_median_s: float | None
    e2e_p90_s: float | None
    e2e_p95_s: float | None
    e2e_p99_s: float | None
    usage_from_server: bool  # token counts are the server's (else counted from stream chunks)
    cached_tokens: int | None
    accept_length: float | None  # from /generate's spec_verify_ct, when the engine reports it
    slos: tuple[str, ...]
    slo_checks: tuple[SloCheck, ...]
    slo_attainment: float | None  # fraction of all sent requests meeting every per-request SLO
    goodput_req_s: float | None
    goodput_output_tok_s: float | None
    send_lag_p50_ms: float | None
    send_lag_p99_ms: float | None
    loop_lag_p99_ms: float | None
    loop_lag_max_ms: float | None
    aborted: str | None
    errors: tuple[str, ...]  # distinct error messages (first few)
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {k: None for k in ("mean", "median", "p90", "p95", "p99", "max")}
    a = np.asarray(values, dtype=float)
    return {
        "mean": float(a.mean()), "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)), "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)), "max": float(a.max()),
    }


def _meets(record: RequestRecord, slos: Sequence[Slo]) -> bool:
    for slo in slos:
        if slo.metric not in PER_REQUEST_SLO_METRICS:
            continue
        value = {"ttft": record.ttft_s, "tpot": record.tpot_s, "e2e": record.e2e_s}[slo.metric]
        if slo.metric == "tpot" and value is None and record.output_tokens < 2:
            continue  # one-token answers have no TPOT
        if value is None or value > slo.limit_s:
            return False
    return True


def summarize(result: LoadResult, slos: Sequence[Slo] = (), *,
              lag_warn_ms: float = LAG_WARN_MS) -> ClientSummary:
    records = result.records
    ok = [r for r in records if r.ok]
    dur = result.duration_s
    per_s = (lambda x: x / dur) if dur > 0 else (lambda x: 0.0)
    n_in = sum(r.input_tokens for r in ok)
    n_out = sum(r.output_tokens for r in ok)
    ttft = _stats([r.ttft_s for r in ok if r.ttft_s is not None])
    tpot = _stats([t for r in ok if (t := r.tpot_s) is not None])
    itl = _stats([g for r in ok for g in r.itl_s])
    e2e = _stats([r.e2e_s for r in ok if r.e2e_s is not None])
    fields = {"ttft": ttft, "tpot": tpot, "itl": itl, "e2e": e2e}

    checks = []
    for slo in slos:
        value = fields[slo.metric][slo.stat]
        checks.append(SloCheck(str(slo), slo.limit_s, value, value is not None and value <= slo.limit_s))
    good = [r for r in ok if _meets(r, slos)] if slos else []
    cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]
    verified = [r for r in ok if r.spec_verify_ct]
    accept = (sum(r.output_tokens for r in verified) / sum(r.spec_verify_ct or 0 for r in verified)
              if verified else None)

    send = np.abs(np.asarray(result.send_lags_s)) * 1e3 if result.send_lags_s else None
    loop = np.asarray(result.loop_lags_s) * 1e3 if result.loop_lags_s else None
    send_p99 = float(np.percentile(send, 99)) if send is not None else None
    loop_p99 = float(np.percentile(loop, 99)) if loop is not None else None
    warnings = []
    if send_p99 is not None and send_p99 > lag_warn_ms:
        warnings.append(f"the load generator sent late (p99 {send_p99:.2f} ms > {lag_warn_ms:g} ms): it may "
                        "be the bottleneck; lower the rate or run it on a less busy machine")
    if loop_p99 is not None and loop_p99 > lag_warn_ms:
        warnings.append(f"the load generator's event loop lagged (p99 {loop_p99:.2f} ms > "
                        f"{lag_warn_ms:g} ms); token timings may include client delay")
    if result.aborted:
        warnings.append(f"load stopped early: {result.aborted}")
    failed = len(records) - len(ok)
    if failed:
        warnings.append(f"{failed} of {len(records)} requests failed")
    if ok and not all(r.usage_from_server for r in ok):
        warnings.append("the server did not report token usage for every request; output tokens were "
                        "counted from stream chunks")
    firsts = [r for r in ok if r.usage_from_server and r.intended_input_tokens]
    if firsts:
        ratio = sum(r.input_tokens for r in firsts) / sum(r.intended_input_tokens or 0 for r in firsts)
        if not 0.9 <= ratio <= 1.1:
            warnings.append(f"prompts came out at {ratio:.0%} of the intended token count (this tokenizer "
                            "splits the generated words differently); token figures are the server's counts")
    errors = tuple(dict.fromkeys(r.error for r in records if r.error))[:5]

    return ClientSummary(
        duration_s=dur, planned_sessions=result.planned_sessions, completed=len(ok), failed=failed,
        total_input_tokens=n_in, total_output_tokens=n_out,
        request_throughput_req_s=per_s(len(ok)), input_throughput_tok_s=per_s(n_in),
        output_throughput_tok_s=per_s(n_out), total_throughput_tok_s=per_s(n_in + n_out),
        mean_concurrency=per_s(sum(r.e2e_s or 0.0 for r in ok)),
        ttft_mean_s=ttft["mean"], ttft_median_s=ttft["median"], ttft_p90_s=ttft["p90"],
        ttft_p95_s=ttft["p95"], ttft_p99_s=ttft["p99"],
        tpot_mean_s=tpot["mean"], tpot_median_s=tpot["median"], tpot_p90_s=tpot["p90"],
        tpot_p95_s=tpot["p95"], tpot_p99_s=tpot["p99"],
        itl_mean_s=itl["mean"], itl_median_s=itl["median"], itl_p90_s=itl["p90"], itl_p95_s=itl["p95"],
        itl_p99_s=itl["p99"], itl_max_s=itl["max"],
        e2e_mean_s=e2e["mean"], e2e_median_s=e2e["median"], e2e_p90_s=e2e["p90"], e2e_p95_s=e2e["p95"],
        e2e_p99_s=e2e["p99"],
        usage_from_server=bool(ok) and all(r.usage_from_server for r in ok),
        cached_tokens=sum(cached) if cached else None,
        accept_length=accept,
        slos=tuple(str(s) for s in slos), slo_checks=tuple(checks),
        slo_attainment=(len(good) / len(records) if records else None) if slos else None,
        goodput_req_s=per_s(len(good)) if slos else None,
        goodput_output_tok_s=per_s(sum(r.output_tokens for r in good)) if slos else None,
        send_lag_p50_ms=float(np.median(send)) if send is not None else None,
        send_lag_p99_ms=send_p99, loop_lag_p99_ms=loop_p99,
        loop_lag_max_ms=float(loop.max()) if loop is not None else None,
        aborted=result.aborted, errors=errors, warnings=tuple(warnings),
    )


_DURATION_SUFFIXES = ("_s",)
_RATE_SUFFIXES = ("_req_s", "_tok_s")


def in_engine_time(summary: ClientSummary, scale: float, slos: Sequence[Slo] = ()) -> ClientSummary:
    """A summary measured on the wall clock of an engine running `scale` times faster than real time (the
    simulator's --time-scale), against `slos` divided by scale -> the same figures in engine time:
    durations, latencies and SLO limits x scale, rates / scale, the SLOs as given. Counts, ratios and the
    client's own lag (ms) are unchanged. scale 1 returns `summary`."""
    if scale == 1.0:
        return summary
    changes: dict[str, Any] = {
        # each check's label is re-written with its engine-time limit, as the user gave it
        "slo_checks": tuple(replace(c, slo=str(replace(parse_slos(c.slo)[0], limit_s=c.limit_s * scale)),
                                    limit_s=c.limit_s * scale,
                                    value_s=None if c.value_s is None else c.value_s * scale)
                            for c in summary.slo_checks),
    }
    if slos:
        changes["slos"] = tuple(str(s) for s in slos)
    for f in fields(summary):
        value = getattr(summary, f.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if f.name.endswith(_RATE_SUFFIXES):
            changes[f.name] = value / scale
        elif f.name.endswith(_DURATION_SUFFIXES):
            changes[f.name] = value * scale
    return replace(summary, **changes)

"""Replay an open-loop load on simulated schedulers in simulated time (no event loop, no HTTP), either on
one co-located server or on a prefill server feeding a decode server through the modelled KV transfer:
what `python -m tuner.runtime.sim --disaggregation-mode prefill|decode` plus the router do, minus the
wall clock. Used by the calibration script and the tests of disaggregation's published effects.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.runtime.sim.engine import Engine
from tuner.runtime.sim.generation import PhraseBank, TokenGenerator
from tuner.runtime.sim.scheduler import Scheduler, SimRequest


@dataclass(frozen=True)
class LoadRequest:
    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LoadSummary:
    """Latencies in simulated seconds, averaged over requests (ITL over every gap between tokens)."""

    ttft_mean_s: float
    ttft_p99_s: float
    itl_mean_s: float
    itl_p99_s: float
    output_tokens_per_s: float


def _replay(scheduler: Scheduler, arrivals: Sequence[tuple[float, SimRequest]]) -> dict[str, list[float]]:
    """Run `scheduler` over requests arriving at the given simulated times; returns each request's token
    release times (one entry per released batch of tokens, repeated per token)."""
    pending = sorted(arrivals, key=lambda a: a[0])
    times: dict[str, list[float]] = {req.rid: [] for _, req in pending}
    now, i = 0.0, 0
    while i < len(pending) or scheduler.has_work():
        while i < len(pending) and pending[i][0] <= now:
            scheduler.submit(pending[i][1])
            i += 1
        step = scheduler.schedule()
        if step is None:
            if i >= len(pending):
                if scheduler.has_work():
                    raise RuntimeError("the scheduler holds requests it cannot schedule")
                break
            now = max(now, pending[i][0])
            continue
        now += step.cost_s
        for req, ids in scheduler.complete(step).emitted:
            times[req.rid].extend([now] * len(ids))
    return times


def _request(index: int, n_in: int, n_out: int, seed: int, phrases: PhraseBank) -> SimRequest:
    prompt = [100 + (index * 7919 + k * 104729) % 50000 for k in range(n_in)]  # distinct per request
    return SimRequest(rid=f"r{index}", prompt_ids=prompt, max_new_tokens=n_out,
                      generator=TokenGenerator(prompt, seed, phrases))


def _summary(load: Sequence[LoadRequest], times: dict[str, list[float]]) -> LoadSummary:
    ttfts: list[float] = []
    gaps: list[float] = []
    end = 0.0
    for k, req in enumerate(load):
        t = times[f"r{k}"]
        ttfts.append(t[0] - req.arrival_s)
        gaps.extend(b - a for a, b in itertools.pairwise(t))
        end = max(end, t[-1])
    tokens = sum(len(t) for t in times.values())

    def p99(xs: list[float]) -> float:
        return sorted(xs)[min(len(xs) - 1, int(0.99 * len(xs)))] if xs else 0.0

    return LoadSummary(statistics.fmean(ttfts), p99(ttfts), statistics.fmean(gaps) if gaps else 0.0, p99(gaps),
                       tokens / end if end else 0.0)


def colocated(engine: Engine, load: Sequence[LoadRequest]) -> LoadSummary:
    """One server doing both phases (`--disaggregation-mode null`)."""
    phrases = PhraseBank(engine.args.seed)
    arrivals = [(r.arrival_s, _request(k, r.input_tokens, r.output_tokens, engine.args.seed, phrases))
                for k, r in enumerate(load)]
    return _summary(load, _replay(engine.scheduler, arrivals))


def disaggregated(prefill: Engine, decode: Engine, load: Sequence[LoadRequest]) -> LoadSummary:
    """A prefill server (`--disaggregation-mode prefill`: prompt plus first token) whose finished prompts
    reach a decode server (`--disaggregation-mode decode`) after `decode.cost_model.kv_transfer_s`.
    Raises ValueError when the engines were built for other roles."""
    if prefill.args.disaggregation_mode != "prefill" or decode.args.disaggregation_mode != "decode":
        raise ValueError("build the engines with --disaggregation-mode prefill and decode respectively")
    phrases = PhraseBank(prefill.args.seed)
    firsts = _replay(prefill.scheduler, [
        (r.arrival_s, _request(k, r.input_tokens, min(1, r.output_tokens), prefill.args.seed, phrases))
        for k, r in enumerate(load)])
    handoff = [
        (firsts[f"r{k}"][0] + decode.cost_model.kv_transfer_s(r.input_tokens),
         _request(k, r.input_tokens, r.output_tokens, decode.args.seed, phrases))
        for k, r in enumerate(load)]
    return _summary(load, _replay(decode.scheduler, handoff))

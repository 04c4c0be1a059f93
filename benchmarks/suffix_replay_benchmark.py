"""Suffix-replay benchmark: replay speed on a trace of at least 1M tokens, and the swept parameters'
estimated decode speed-up against the engine defaults on synthetic agentic traces of low, medium and high
repetition.

    python benchmarks/suffix_replay_benchmark.py --out docs/benchmarks/suffix-replay.md

Speed: one parameter set (the engine defaults) over a synthetic medium-repetition trace of >= 1M tokens
(prompt + response), wall time of the replay alone. Speed-up: the default sweep grid of `tuner suffix-replay`
per repetition level; the best set's figures next to the defaults', both under the default cost model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time

from tuner.suffix.cost import VerifyCostModel
from tuner.suffix_decoding.params import ENGINE_DEFAULTS
from tuner.suffix.replay import replay
from tuner.suffix.sweep import SweepGrid, sweep
from tuner.suffix.synthetic import REPETITION_LEVELS, synthetic_agentic_trace


def _tokens(trace) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    return (sum(int(r.prompt_token_ids.size) for r in trace), sum(int(r.response_token_ids.size) for r in trace))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--speed-sessions", type=int, default=60, help="sessions of the speed trace")
    ap.add_argument("--sweep-sessions", type=int, default=12, help="sessions per repetition level")
    args = ap.parse_args()
    lines = ["# Suffix replay benchmark", "",
             f"Command: `python benchmarks/suffix_replay_benchmark.py --out {args.out}`  ",
             f"Machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}; "
             f"date {dt.date.today().isoformat()}", ""]
    cost = VerifyCostModel()

    trace = synthetic_agentic_trace(sessions=args.speed_sessions, turns_per_session=12, repetition=0.5,
                                    response_tokens=400, seed=11)
    prompt, response = _tokens(trace)
    start = time.perf_counter()
    figures = replay(trace, [ENGINE_DEFAULTS])[0]
    seconds = time.perf_counter() - start
    lines += ["## Replay speed (one parameter set: the engine defaults)", "",
              "| requests | prompt tokens | response tokens | total tokens | wall s | tokens/s | response tokens/s |",
              "| --- | --- | --- | --- | --- | --- | --- |",
              f"| {len(trace)} | {prompt} | {response} | {prompt + response} | {seconds:.1f} | "
              f"{(prompt + response) / seconds:,.0f} | {response / seconds:,.0f} |", "",
              f"Accept length there: {figures.tokens_per_step:.2f} tokens per verify step.", ""]
    print("\n".join(lines[-6:]), flush=True)

    grid = SweepGrid()
    lines += ["## Best swept set vs the engine defaults (depth 64, factor 1.0, offset 0, min prob 0.1, 8 draft "
              "tokens)", "",
              f"Grid: depths {grid.depths}, factors {grid.max_spec_factors}, offsets {grid.max_spec_offsets}, "
              f"min probs {grid.min_token_probs}, draft tokens {grid.num_draft_tokens} "
              f"({len(grid.param_sets())} sets). Cost model: decode step {cost.decode_step_s * 1e3:g} ms, "
              f"+{cost.verify_token_s * 1e3:g} ms per extra verified token, drafting {cost.draft_s * 1e3:g} ms.",
              "",
              "| repetition | tokens | sweep wall s | set | depth | factor | offset | min prob | draft tokens | "
              "acceptance | tokens/step | est. speed-up |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for level, share in REPETITION_LEVELS.items():
        trace = synthetic_agentic_trace(sessions=args.sweep_sessions, turns_per_session=8, repetition=share,
                                        seed=21)
        start = time.perf_counter()
        ranked = sweep(trace, grid, cost)
        seconds = time.perf_counter() - start
        defaults = next(r for r in ranked if r.params == ENGINE_DEFAULTS)
        for label, r in (("best", ranked[0]), ("defaults", defaults)):
            p, f = r.params, r.figures
            lines.append(f"| {level} ({share:g}) | {sum(_tokens(trace))} | {seconds:.0f} | {label} (rank {r.rank}) | "
                         f"{p.cache_max_depth} | {p.max_spec_factor:g} | {p.max_spec_offset:g} | "
                         f"{p.min_token_prob:g} | {p.num_draft_tokens} | {f.acceptance_rate:.1%} | "
                         f"{f.tokens_per_step:.2f} | {r.speedup:.3f}x |")
        print("\n".join(lines[-2:]), flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

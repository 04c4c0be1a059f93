"""Offline replay vs the simulated engine serving the same trace (issue #15, "one model of acceptance").

    python benchmarks/suffix_sim_agreement.py

For synthetic agentic traces of low, medium and high repetition: the offline replay's accept length (tokens
per verify pass; as arctic-inference's simulator, and engine-like with the first token from the prefill) and
the simulator's, serving the trace with --sim-response-trace one request at a time and eight at a time, the
cache flushed between. Docs: docs/benchmarks/suffix-replay.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "runtime" / "sim"))

from test_sim_suffix_replay_agreement import MODEL, PARAMS, _flags, _flush, _serve

from tuner.runtime.engines import get_engine
from tuner.runtime.launcher import launch
from tuner.suffix.replay import replay
from tuner.suffix.synthetic import REPETITION_LEVELS, synthetic_agentic_trace
from tuner.suffix_decoding.traces import write_token_trace


def main() -> int:
    traces = {level: synthetic_agentic_trace(sessions=6, turns_per_session=6, repetition=r, response_tokens=200,
                                             seed=11 + i) for i, (level, r) in enumerate(REPETITION_LEVELS.items())}
    print(f"parameters: {PARAMS.label()}; {len(traces['low'])} requests per trace, "
          f"{sum(t.response_token_ids.size for t in traces['low'])} response tokens")
    print(f"{'repetition':<11}{'offline':>9}{'offline, 1st from prefill':>27}{'live x1':>9}{'live x8':>9}"
          f"{'x8 vs offline':>15}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.jsonl"
        write_token_trace(path, [r for t in traces.values() for r in t])
        sim = get_engine("sim", time_scale=20, sglang="seed")  # SUFFIX exists only in the seeds' SGLang forks
        t0 = time.perf_counter()
        with launch(sim, MODEL, _flags(path), log_dir=Path(folder), ready_timeout_s=60) as engine:
            for level, trace in traces.items():
                arctic_like = replay(trace, [PARAMS])[0].tokens_per_step
                engine_like = replay(trace, [PARAMS], first_token_from_prefill=True)[0].tokens_per_step
                _flush(engine.base_url)
                one = _serve(engine.base_url, trace)
                _flush(engine.base_url)
                eight = _serve(engine.base_url, trace, concurrency=8)
                print(f"{level:<11}{arctic_like:>9.3f}{engine_like:>27.3f}{one:>9.3f}{eight:>9.3f}"
                      f"{eight / engine_like - 1:>+14.1%}")
        print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

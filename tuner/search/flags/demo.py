"""The demo search, as data: what `tuner demo` runs and what the service queues as its demo (the fields of
a flag-search request, tuner.jobs.specs.FlagSearchRequest). GLM-4.7-FP8 TP8 on the simulated H200 engine,
under a TPOT limit that the engine's defaults only meet at a modest rate: speculative decoding (NEXTN, the
model's MTP head) with its depth, the batch cap and the prefill chunk decide how much load fits.

Sized to finish in under 5 minutes on 2 CPU cores, with repeats enough that the gain is beyond the spread.
"""

from __future__ import annotations

from typing import Any

DEMO_STUDY = "demo-glm47-fp8-tp8-h200"

# FlagSearchRequest fields (names as on the command line, with _); tuples where the request has tuples.
DEMO_SEARCH: dict[str, Any] = {
    # time scale 1: a busy 2-core machine cannot run the simulator faster without it lagging its model
    "engine": "sim", "model": "zai-org/GLM-4.7-FP8", "sim_gpu": "H200", "time_scale": 1.0,
    # a seed-era knob name: written as --cuda-graph-max-bs-decode for SGLang 0.5.23; fewer graphs, faster start
    "base_flag": ("tp-size=8", "startup-seconds=1", "cuda-graph-max-bs=64"),
    "preset": "sglang-demo",
    "slo": "ttft_p99<=2s,tpot_p99<=25ms",
    "workload": "random", "input_len": 512, "output_len": 32,
    "trials": 7, "repeats": 3, "top_k": 1,
    # closed loop: N requests in flight; the search finds the largest N that meets the SLOs. At least 32
    # requests per step, so a step is a steady state rather than one wave (8 gave spreads of +-50%)
    "load_search": "concurrency", "requests_per_step": 32, "max_load_steps": 3, "rate_min": 4.0,
    "rate_max": 48.0,
    "study": DEMO_STUDY,
}


def demo_argv() -> list[str]:
    """DEMO_SEARCH as `tuner flag-search` arguments (the same search, for a person to re-run or vary)."""
    argv: list[str] = []
    for key, value in DEMO_SEARCH.items():
        flag = "--" + key.replace("_", "-")
        for one in value if isinstance(value, tuple) else (value,):
            argv += [flag, f"{one:g}" if isinstance(one, float) else str(one)]
    return argv

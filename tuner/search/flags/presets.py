"""Built-in search spaces per engine: general SGLang knobs, SGLang with NEXTN/EAGLE, SGLang with SUFFIX,
and vLLM. Written as the same mappings a YAML space file holds, so `preset: NAME` in a file extends one.

Ranges suit MoE models on 80-160 GB GPUs (H100/H200). Data, and the checked space of each (space_check.py does the checking).
"""

from __future__ import annotations

from typing import Any

from tuner.errors import TunerError
from tuner.search.flags.params import params_from
from tuner.search.flags.space_check import SearchSpace, check_space

_SGLANG_CORE: dict[str, dict[str, Any]] = {
    "chunked-prefill-size": {"type": "categorical", "choices": [2048, 4096, 8192, 16384]},
    "cuda-graph-max-bs": {"type": "int", "low": 32, "high": 512, "step": 32},
    "max-running-requests": {"type": "int", "low": 16, "high": 1024, "log": True},
    "mem-fraction-static": {"type": "float", "low": 0.70, "high": 0.93, "step": 0.01},
}

PRESETS: dict[str, dict[str, Any]] = {
    "sglang": {
        "engine": "sglang",
        "params": {
            **_SGLANG_CORE,
            "max-prefill-tokens": {"type": "categorical", "choices": [8192, 16384, 32768]},
            "schedule-conservativeness": {"type": "float", "low": 0.3, "high": 1.5, "step": 0.1},
            "schedule-policy": {"type": "categorical", "choices": ["fcfs", "lpm"]},
            "enable-mixed-chunk": {"type": "categorical", "choices": [False, True]},
        },
    },
    "sglang-eagle": {
        "engine": "sglang",
        "base_flags": {"speculative-algorithm": "NEXTN"},
        "params": {
            **_SGLANG_CORE,
            "speculative-num-steps": {"type": "int", "low": 1, "high": 5},
            "speculative-eagle-topk": {"type": "categorical", "choices": [1, 2, 4, 8]},
            "speculative-num-draft-tokens": {"type": "int", "low": 2, "high": 16},
        },
        "env": {"SGLANG_ENABLE_SPEC_V2": {"type": "categorical", "choices": ["0", "1"]}},
    },
    "sglang-suffix": {
        "engine": "sglang",
        "base_flags": {"speculative-algorithm": "SUFFIX"},
        "params": {
            "cuda-graph-max-bs": _SGLANG_CORE["cuda-graph-max-bs"],
            "max-running-requests": _SGLANG_CORE["max-running-requests"],
            "speculative-num-draft-tokens": {"type": "categorical", "choices": [4, 8, 12, 16, 24, 32]},
            "speculative-suffix-cache-max-depth": {"type": "categorical", "choices": [16, 24, 32, 64, 128]},
            "speculative-suffix-max-spec-factor": {"type": "float", "low": 0.5, "high": 4.0, "step": 0.5},
            "speculative-suffix-max-spec-offset": {"type": "float", "low": 0.0, "high": 8.0, "step": 1.0},
            "speculative-suffix-min-token-prob": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
        },
    },
    # The demo's space (tuner/search/flags/demo.py): the knobs that decide goodput under a TPOT limit on
    # an MoE model with an MTP head: speculative decoding and its depth, the batch cap, the prefill chunk.
    "sglang-demo": {
        "engine": "sglang",
        "params": {
            "speculative-algorithm": {"type": "categorical", "choices": [None, "NEXTN"]},
            "speculative-num-steps": {"type": "int", "low": 1, "high": 4},
            "speculative-eagle-topk": {"type": "categorical", "choices": [1, 2]},
            "speculative-num-draft-tokens": {"type": "int", "low": 2, "high": 8},
            "max-running-requests": {"type": "categorical", "choices": [8, 24, 64]},
            "chunked-prefill-size": {"type": "categorical", "choices": [1024, 8192]},
        },
    },
    "vllm": {
        "engine": "vllm",
        "params": {
            "max-num-seqs": {"type": "int", "low": 32, "high": 1024, "log": True},
            "max-num-batched-tokens": {"type": "categorical", "choices": [2048, 4096, 8192, 16384, 32768]},
            "gpu-memory-utilization": {"type": "float", "low": 0.80, "high": 0.95, "step": 0.01},
        },
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def preset_space(name: str, *, checked: bool = True) -> SearchSpace:
    """The built-in space `name` (checked unless `checked=False`, for files that extend it)."""
    data = PRESETS.get(name)
    if data is None:
        raise TunerError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    params = params_from(data.get("params"), f"preset {name}")
    env = params_from(data.get("env"), f"preset {name}", env=True)
    space = SearchSpace(tuple(params + env), dict(data.get("base_flags") or {}), {},
                        "vllm" if data["engine"] == "vllm" else "sglang", name=name)
    return check_space(space) if checked else space

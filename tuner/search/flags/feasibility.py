"""Learning where configs run out of memory: a config whose engine log shows CUDA out of memory (at load,
warm-up or CUDA graph capture) teaches that every config needing at least as much memory will fail too, so
those are recorded as predicted-infeasible instead of being launched. Other failures (a crash, an illegal
memory access during graph capture, a KV cache too small) say nothing about larger settings and never count. "At least as much": every memory-pressure flag (mem-fraction-static,
cuda-graph-max-bs, chunked-prefill-size, ...) at or beyond the failed value, every other flag that can
change memory equal, environment equal.

Pure comparisons of flag mappings; nothing is launched here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tuner.search.flags.space import Candidate, SearchSpace

# +1: a larger value needs more GPU memory (outside or inside the static pool), so it fails where a smaller
# one did. -1 would be the reverse; none of the built-in flags is.
MEMORY_PRESSURE: dict[str, int] = {
    # SGLang (and the simulator)
    "mem-fraction-static": 1,
    "cuda-graph-max-bs": 1,
    "cuda-graph-bs": 1,
    "chunked-prefill-size": 1,
    "max-prefill-tokens": 1,
    "max-running-requests": 1,
    "context-length": 1,
    "speculative-num-steps": 1,
    "speculative-eagle-topk": 1,
    "speculative-num-draft-tokens": 1,
    # vLLM
    "gpu-memory-utilization": 1,
    "max-num-seqs": 1,
    "max-num-batched-tokens": 1,
    "max-model-len": 1,
}
# Flags that do not change how much memory the engine takes: ignored when comparing.
MEMORY_NEUTRAL: frozenset[str] = frozenset({
    "schedule-policy", "schedule-conservativeness", "enable-mixed-chunk", "log-level", "random-seed",
    "decode-log-interval", "enable-cache-report", "watchdog-timeout", "extra-metric-labels",
    "bucket-time-to-first-token", "bucket-inter-token-latency", "bucket-e2e-request-latency",
    "speculative-suffix-max-spec-factor", "speculative-suffix-max-spec-offset",
    "speculative-suffix-min-token-prob",
})
MEMORY_FAILURE_KINDS = ("oom",)  # only real memory exhaustion predicts that more memory fails too
UNLIMITED_MINUS_ONE = frozenset({"chunked-prefill-size"})  # -1 disables chunking: the largest setting


@dataclass(frozen=True)
class MemoryFailure:
    trial_number: int
    kind: str
    flags: Mapping[str, Any]
    env: Mapping[str, str]


def memory_directions(space: SearchSpace | None = None) -> dict[str, int]:
    """The built-in table, overridden by the space's `memory:` annotations."""
    out = dict(MEMORY_PRESSURE)
    if space is not None:
        for p in space.params:
            if not p.env and p.memory is not None:
                out[p.name] = p.memory
    return out


def _level(flag: str, value: Any) -> float | None:
    """A comparable memory level of a flag value; None when it has none."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (list, tuple)):
        levels = [_level(flag, v) for v in value]
        return max((x for x in levels if x is not None), default=None)
    if isinstance(value, (int, float)):
        if flag in UNLIMITED_MINUS_ONE and value == -1:
            return math.inf
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def needs_at_least(flags: Mapping[str, Any], failed: Mapping[str, Any], directions: Mapping[str, int]) -> bool:
    """Whether `flags` asks for at least the memory of `failed`."""
    for key in set(flags) | set(failed):
        if key in MEMORY_NEUTRAL:
            continue
        a, b = flags.get(key), failed.get(key)
        direction = directions.get(key, 0)
        if direction:
            if a is None and b is None:
                continue
            if a is None or b is None:
                return False  # one side runs on the engine's default: not comparable
            la, lb = _level(key, a), _level(key, b)
            if la is None or lb is None or direction * (la - lb) < 0:
                return False
        elif a != b and not (_level(key, a) is not None and _level(key, a) == _level(key, b)):
            return False
    return True


def predicted_failure(candidate: Candidate, failures: Iterable[MemoryFailure],
                      directions: Mapping[str, int]) -> MemoryFailure | None:
    """The memory failure `candidate` would repeat, or None."""
    for f in failures:
        if dict(candidate.env) == dict(f.env) and needs_at_least(candidate.flags, f.flags, directions):
            return f
    return None


# Launch failures of the baseline that no searched flag can change: the engine refused an argument it was
# given (the base flags, the model), or died before answering /health for a reason that is not memory.
BASELINE_BLOCKING_KINDS = ("invalid_argument", "crash")
_REASON_LINE = re.compile(r"error|exception|not found|no such|not a valid|cannot|could not", re.IGNORECASE)


def baseline_blocker(failure_kind: str | None, never_ready: bool, log_tail: str | None, error: str | None,
                     searched_flags: Iterable[str]) -> str | None:
    """Why no candidate can launch, judged from the baseline (base flags only) failing to start; None when
    a searched flag might change the outcome (a memory failure, a timeout, or a log that names a searched
    flag). The reason is the engine log's last error line (e.g. an unknown model, a rejected base flag)."""
    if failure_kind not in BASELINE_BLOCKING_KINDS or not never_ready:
        return None
    text = log_tail or ""
    for flag in searched_flags:
        if flag in text or flag.replace("-", "_") in text:
            return None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[tuner]")]
    reason = next((line for line in reversed(lines) if _REASON_LINE.search(line)), None)
    return reason or (error or "").strip().split("\n")[0] or failure_kind

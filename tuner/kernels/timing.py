"""The one timing harness for every kernel: CUDA graph of several calls, warm-up, L2 flush, median of replays.

It knows nothing of any kernel: it takes a callable `call(i)` that runs the kernel on input set i. Rotating
input sets (and the kernel's own rotation of weight copies) keeps L2 from flattering small problems.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tuner.errors import NoGpuError

# Bump when the method changes: measurements taken with another method are not comparable and are not reused.
BENCH_METHOD = "graph10-rot-l2flush-median-v2"  # v2: finals in interleaved rounds


@dataclass(frozen=True)
class TimingResult:
    median_us: float  # per call
    spread_us: float  # half the inter-quartile range, per call
    replays: int


def require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise NoGpuError(
            "no CUDA GPU is visible (torch.cuda.is_available() is False). Kernel timing needs an NVIDIA GPU; "
            "on a CPU-only machine run `tuner kernel-sweep --interpret` for a correctness-only pass at tiny shapes."
        )
    return torch.device("cuda")


class L2Flusher:
    """Writes a buffer twice the size of L2 so the next replay starts with a cold cache."""

    def __init__(self, device: torch.device) -> None:
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20) or 50 * 2**20
        self._buf = torch.empty(2 * l2 // 4, dtype=torch.int32, device=device)

    def flush(self) -> None:
        self._buf.zero_()


def time_calls(
    call: Callable[[int], object],
    calls_per_graph: int = 10,
    replays: int = 20,
    warmup_replays: int = 3,
    flusher: L2Flusher | None = None,
) -> TimingResult:
    """Capture `calls_per_graph` calls (call(0)..call(n-1)) in one CUDA graph and time `replays` replays.

    The caller must have run `call` once outside the graph (compilation, autotuning of nothing else).
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(calls_per_graph):  # warm the caching allocator on a side stream before capture
            call(i)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls_per_graph):
            call(i)
    for _ in range(warmup_replays):
        graph.replay()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
    for i in range(replays):
        if flusher is not None:
            flusher.flush()
        starts[i].record()
        graph.replay()
        ends[i].record()
    torch.cuda.synchronize()
    per_call_us = sorted(s.elapsed_time(e) * 1000.0 / calls_per_graph for s, e in zip(starts, ends))
    del graph
    median = statistics.median(per_call_us)
    if len(per_call_us) >= 4:
        q = statistics.quantiles(per_call_us, n=4)
        spread = (q[2] - q[0]) / 2
    else:
        spread = (per_call_us[-1] - per_call_us[0]) / 2
    return TimingResult(median_us=median, spread_us=spread, replays=replays)


def measure_copy_bandwidth_gbs(device: torch.device, nbytes: int = 2 * 2**30) -> float:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written (the roofline's ceiling)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        dst.copy_(src)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1000.0)
    return 2 * nbytes / statistics.median(times) / 1e9

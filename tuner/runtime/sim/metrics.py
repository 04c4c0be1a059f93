"""Prometheus metrics of the simulated server with SGLang 0.5.23's exact names, labels and default buckets,
in a dedicated CollectorRegistry (so several servers can live in one test process).

As in SGLang, tokenizer-side series (TTFT, ITL, E2E, token and request counters) carry `model_name` and
`engine_type` (+ `is_streaming` where SGLang adds it); scheduler-side ones (queue time, gauges, realtime
tokens, CUDA graph passes) also `tp_rank`, `pp_rank`, `moe_ep_rank`.

Only recording and exposition; when to observe what is the engine's decision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DEFAULT_TTFT_BUCKETS_S = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
DEFAULT_ITL_BUCKETS_S = (
    0.002,
    0.004,
    0.006,
    0.008,
    0.010,
    0.015,
    0.020,
    0.025,
    0.030,
    0.035,
    0.040,
    0.060,
    0.080,
    0.100,
    0.200,
    0.400,
    0.600,
    0.800,
    1,
    2,
    4,
    6,
    8,
)
DEFAULT_E2E_BUCKETS_S = (
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1,
    2,
    4,
    6,
    8,
    10,
    20,
    40,
    60,
    80,
    100,
    200,
    400,
    600,
    1200,
    1800,
    2400,
)
# SGLang 0.5.23 SchedulerMetricsCollector: sub-100 ms edges, so short queue times do not all land in one bucket
QUEUE_TIME_BUCKETS_S = (
    0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 100,
    200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1600, 1800, 2000, 2500, 3000,
)
# SGLang 0.5.23 TokenizerMetricsCollector's default_bucket_prompt_tokens (also the generation-length default)
DEFAULT_TOKENS_BUCKETS = (
    100, 300, 500, 700, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 12500, 15000,
    17500, 20000, 22500, 25000, 27500, 30000, 35000, 40000, 60000, 80000, 100000, 200000, 300000, 400000,
    600000, 800000, 1000000, 1100000,
)
_CREATED = re.compile(r"^(# (HELP|TYPE) )?[\w:]+_created[{ ]")
CACHE_SOURCE = "device"  # the GPU radix cache (no host or storage tiers in the simulator)


class SimMetrics:
    def __init__(
        self,
        model_name: str,
        extra_labels: Mapping[str, str] | None = None,
        ttft_buckets_s: Sequence[float] | None = None,
        itl_buckets_s: Sequence[float] | None = None,
        e2e_buckets_s: Sequence[float] | None = None,
        prompt_tokens_buckets: Sequence[float] | None = None,
        generation_tokens_buckets: Sequence[float] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        extra = dict(extra_labels or {})
        tokenizer = {"model_name": model_name, "engine_type": "unified", **extra}
        scheduler = {
            "model_name": model_name,
            "engine_type": "unified",
            "tp_rank": "0",
            "pp_rank": "0",
            "moe_ep_rank": "0",
            **extra,
        }
        gauge_labels = scheduler
        r = self.registry
        self._tokenizer_labels = tokenizer

        def hist(name: str, doc: str, buckets: Sequence[float], labels: Mapping[str, str],
                 more: Sequence[str] = ()) -> Histogram:
            return Histogram(name, doc, [*labels, *more], buckets=list(buckets), registry=r)

        def counter(name: str, doc: str, labels: Mapping[str, str], more: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, [*labels, *more], registry=r)

        self.ttft_by_stream = hist(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            ttft_buckets_s or DEFAULT_TTFT_BUCKETS_S,
            tokenizer,
            ["is_streaming"],
        )
        self.itl = hist(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            itl_buckets_s or DEFAULT_ITL_BUCKETS_S,
            tokenizer,
        ).labels(**tokenizer)
        self.e2e_by_stream = hist(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            e2e_buckets_s or DEFAULT_E2E_BUCKETS_S,
            tokenizer,
            ["is_streaming"],
        )
        self.queue_time = hist(
            "sglang:queue_time_seconds", "Histogram of queueing time in seconds.", QUEUE_TIME_BUCKETS_S, scheduler
        ).labels(**scheduler)
        self.prompt_tokens_by_stream = counter(
            "sglang:prompt_tokens", "Number of prefill tokens processed.", tokenizer, ["is_streaming"]
        )
        self.generation_tokens_by_stream = counter(
            "sglang:generation_tokens", "Number of generation tokens processed.", tokenizer, ["is_streaming"]
        )
        self.cached_tokens = counter(
            "sglang:cached_tokens", "Number of cached prompt tokens.", tokenizer, ["cache_source"]
        ).labels(**tokenizer, cache_source=CACHE_SOURCE)
        self.num_requests_by_stream = counter(
            "sglang:num_requests", "Number of requests processed.", tokenizer, ["is_streaming"]
        )
        self.prompt_tokens_histogram = hist(
            "sglang:prompt_tokens_histogram", "Histogram of prompt token length.",
            prompt_tokens_buckets or DEFAULT_TOKENS_BUCKETS, tokenizer,
        ).labels(**tokenizer)
        self.uncached_prompt_tokens_histogram = hist(
            "sglang:uncached_prompt_tokens_histogram", "Histogram of uncached (compute) prompt token length.",
            prompt_tokens_buckets or DEFAULT_TOKENS_BUCKETS, tokenizer,
        ).labels(**tokenizer)
        self.generation_tokens_histogram = hist(
            "sglang:generation_tokens_histogram", "Histogram of generation token length.",
            generation_tokens_buckets or DEFAULT_TOKENS_BUCKETS, tokenizer,
        ).labels(**tokenizer)
        self.num_aborted = counter("sglang:num_aborted_requests", "Number of requests aborted.", tokenizer).labels(
            **tokenizer
        )
        realtime = counter("sglang:realtime_tokens", "Tokens processed, by mode.", scheduler, ["mode"])
        self.realtime_prefill_compute = realtime.labels(**scheduler, mode="prefill_compute")
        self.realtime_prefill_cache = realtime.labels(**scheduler, mode="prefill_cache")
        self.realtime_decode = realtime.labels(**scheduler, mode="decode")
        passes = counter("sglang:cuda_graph_passes", "Forward passes, by CUDA graph use.", scheduler, ["mode"])
        self.graph_passes = passes.labels(**scheduler, mode="cuda_graph")
        self.eager_passes = passes.labels(**scheduler, mode="eager")

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, list(gauge_labels), registry=r).labels(**gauge_labels)

        self.num_running_reqs = gauge("sglang:num_running_reqs", "The number of running requests.")
        self.num_queue_reqs = gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.")
        self.token_usage = gauge("sglang:token_usage", "The token usage.")
        self.num_used_tokens = gauge("sglang:num_used_tokens", "The number of used tokens.")
        self.max_total_num_tokens = gauge("sglang:max_total_num_tokens", "Maximum total number of tokens.")
        self.gen_throughput = gauge("sglang:gen_throughput", "The generation throughput (token/s).")
        self.cache_hit_rate = gauge("sglang:cache_hit_rate", "The prefix cache hit rate.")
        self.spec_accept_length = gauge(
            "sglang:spec_accept_length", "The average acceptance length of speculative decoding."
        )
        self.spec_accept_rate = gauge(
            "sglang:spec_accept_rate", "The average acceptance rate of speculative decoding."
        )

    def observe_tokens(self, interval_s: float, num_tokens: int) -> None:
        """Inter-token latency: a release of n tokens after interval_s counts n tokens of interval_s / n."""
        if num_tokens <= 0:
            return
        per_token = max(0.0, interval_s) / num_tokens
        for _ in range(num_tokens):
            self.itl.observe(per_token)

    def _stream(self, streaming: bool) -> dict[str, str]:
        return {**self._tokenizer_labels, "is_streaming": "true" if streaming else "false"}

    def observe_first_token(self, ttft_s: float, streaming: bool = False) -> None:
        self.ttft_by_stream.labels(**self._stream(streaming)).observe(ttft_s)

    def observe_finished(
        self, prompt_tokens: int, generation_tokens: int, cached_tokens: int, e2e_latency_s: float,
        *, streaming: bool = False,
    ) -> None:
        labels = self._stream(streaming)
        self.prompt_tokens_by_stream.labels(**labels).inc(prompt_tokens)
        self.generation_tokens_by_stream.labels(**labels).inc(generation_tokens)
        if cached_tokens > 0:
            self.cached_tokens.inc(cached_tokens)
        self.num_requests_by_stream.labels(**labels).inc()
        self.e2e_by_stream.labels(**labels).observe(e2e_latency_s)
        self.prompt_tokens_histogram.observe(prompt_tokens)
        self.uncached_prompt_tokens_histogram.observe(prompt_tokens - cached_tokens)
        self.generation_tokens_histogram.observe(generation_tokens)

    def exposition(self) -> bytes:
        """The text format as SGLang 0.5.23 serves it: through prometheus_client's multiprocess collector,
        which has no `_created` series."""
        lines = generate_latest(self.registry).decode().splitlines(keepends=True)
        return "".join(line for line in lines if not _CREATED.match(line)).encode()

"""Prometheus scraping: PromQL histogram_quantile, deltas, missing metrics, garbage, gauge sampling."""

from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuner.errors import EngineError
from tuner.runtime.compare import engine_figures
from tuner.runtime.engines import GaugeName, get_engine
from tuner.runtime.scraper import (
    GaugeSampler,
    MetricsParseError,
    delta,
    histogram_quantile,
    parse_metrics,
    scrape,
)

INF = math.inf
BOUNDS = (0.1, 0.2, 0.4, INF)
COUNTS = (2, 6, 9, 10)


@pytest.mark.parametrize("q, expected", [
    (0.5, 0.175),  # rank 5 in (0.1, 0.2]: 0.1 + 0.1 * (5 - 2) / 4
    (0.1, 0.05),  # rank 1 in the lowest bucket, which starts at 0
    (0.7, 0.2 + 0.2 / 3),  # rank 7 in (0.2, 0.4]: 0.2 + 0.2 * (7 - 6) / 3
    (0.9, 0.4),  # rank 9 is the top of (0.2, 0.4]
    (0.99, 0.4),  # rank 9.9 lands in +Inf: the last finite upper bound
    (0.0, 0.0),
])
def test_histogram_quantile_matches_hand_computed_promql(q, expected):
    assert histogram_quantile(q, BOUNDS, COUNTS) == pytest.approx(expected)


def test_histogram_quantile_edge_cases():
    assert math.isnan(histogram_quantile(0.5, BOUNDS, (0, 0, 0, 0)))  # no observations
    assert math.isnan(histogram_quantile(0.5, (0.1, 0.2), (1, 2)))  # no +Inf bucket
    assert histogram_quantile(-0.1, BOUNDS, COUNTS) == -INF
    assert histogram_quantile(1.5, BOUNDS, COUNTS) == INF
    # a non-monotonic scrape is repaired like PromQL does (counts forced non-decreasing)
    assert histogram_quantile(0.5, BOUNDS, (2, 6, 5, 10)) == pytest.approx(0.175)


def _hist(name: str, counts: tuple[int, ...], total: float, labels: str = 'model_name="m"') -> str:
    lines = [f"# TYPE {name} histogram"]
    for bound, count in zip(("0.1", "0.2", "0.4", "+Inf"), counts, strict=True):
        lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {count}')
    lines += [f"{name}_count{{{labels}}} {counts[-1]}", f"{name}_sum{{{labels}}} {total}"]
    return "\n".join(lines) + "\n"


def test_quantiles_come_from_bucket_deltas_not_from_totals_since_launch():
    name = "sglang:time_to_first_token_seconds"
    before = parse_metrics(_hist(name, (100, 100, 100, 100), 5.0), "u")  # warm-up: all fast
    after = parse_metrics(_hist(name, (102, 106, 109, 110), 7.5), "u")
    h = delta(before, after).histogram(name)
    assert h is not None and h.count == 10 and h.sum == pytest.approx(2.5)
    assert h.quantile(0.5) == pytest.approx(0.175)
    assert h.bucket_of_quantile(0.5) == (0.1, 0.2)
    assert h.mean() == pytest.approx(0.25)


def test_series_are_summed_across_ranks():
    name = "sglang:time_to_first_token_seconds"
    text = _hist(name, (1, 3, 4, 5), 1.0, 'tp_rank="0"') + _hist(name, (1, 3, 5, 5), 1.0, 'tp_rank="1"')
    h = parse_metrics(text.replace(f"# TYPE {name} histogram\n", "", 1), "u").histogram(name)
    assert h is not None and h.cumulative_counts == (2, 6, 9, 10)


def test_counters_and_missing_metrics():
    before = parse_metrics("sglang:prompt_tokens_total 100\n", "u")
    after = parse_metrics('sglang:prompt_tokens_total 250\n'
                          'sglang:cached_tokens_total{cache_source="device"} 40\n', "u")
    d = delta(before, after)
    assert d.counter("sglang:prompt_tokens_total") == 150
    assert d.counter("sglang:cached_tokens_total") == 40  # a series born during the window started at 0
    assert d.counter("sglang:generation_tokens_total") is None  # absent is not zero
    assert d.histogram("sglang:inter_token_latency_seconds") is None


def test_engine_figures_list_missing_metrics_instead_of_zeros():
    snap = parse_metrics("sglang:prompt_tokens_total 10\n", "u")
    figures = engine_figures(delta(snap, snap), get_engine("sglang"))
    assert figures.ttft_p99 is None and figures.generation_tokens is None
    assert "sglang:time_to_first_token_seconds" in figures.missing
    assert "sglang:generation_tokens_total" in figures.missing
    assert figures.prompt_tokens == 0


def test_garbage_payload_raises_naming_the_url():
    with pytest.raises(MetricsParseError) as info:
        parse_metrics("<html><body>502 Bad Gateway</body></html>\n", "http://127.0.0.1:9/metrics")
    assert "http://127.0.0.1:9/metrics" in str(info.value)
    assert "invalid metric name" in str(info.value) or "could not convert" in str(info.value)


class _Payload:
    def __init__(self, texts: list[str]):
        self.texts = texts
        self.i = 0


def _serve(payload: _Payload, status: int = 200):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            text = payload.texts[min(payload.i, len(payload.texts) - 1)]
            payload.i += 1
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/metrics"


def test_scrape_reports_http_errors_and_garbage_clearly():
    server, url = _serve(_Payload(["not { prometheus"]))
    try:
        with pytest.raises(MetricsParseError, match=url):
            scrape(url)
    finally:
        server.shutdown()
    server, url = _serve(_Payload(["x"]), status=404)
    try:
        with pytest.raises(EngineError, match="404"):
            scrape(url)
    finally:
        server.shutdown()


def payload_seen(sampler: GaugeSampler) -> int:
    stat = sampler.stats()["running"]
    return 0 if stat is None else stat.n_samples


def test_gauge_sampler_reports_mean_and_max_during_load():
    texts = [f'sglang:num_running_reqs{{tp_rank="0"}} {v}\nsglang:token_usage{{tp_rank="0"}} 0.5\n'
             f'sglang:token_usage{{tp_rank="1"}} 0.7\nsome_other_metric 1\n' for v in (2, 4, 6, 8)]
    server, url = _serve(_Payload(texts))
    try:
        gauges = {"running": GaugeName("sglang:num_running_reqs"),
                  "token_usage": GaugeName("sglang:token_usage", "mean"),
                  "queued": GaugeName("sglang:num_queue_reqs")}
        sampler = GaugeSampler(url, gauges, interval_s=0.02)
        with sampler:
            for _ in range(500):
                if payload_seen(sampler) >= 4:
                    break
                threading.Event().wait(0.01)
        stats = sampler.stats()
    finally:
        server.shutdown()
    running = stats["running"]
    assert running is not None and running.max == 8 and running.n_samples >= 4
    assert 2 <= running.mean < 8
    assert stats["token_usage"] is not None and stats["token_usage"].mean == pytest.approx(0.6)
    assert stats["queued"] is None  # never exported: missing, not 0

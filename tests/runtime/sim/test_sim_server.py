"""The simulator as a real process: readiness, OpenAI streaming, metrics, native /generate, OOM, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tuner.runtime.sim import tokenizer

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.url, self.log = proc, f"http://127.0.0.1:{port}", log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 60.0) -> list[int]:
        """Poll /health until 200; returns the status codes seen (None while the port is closed)."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                code = httpx.get(self.url + "/health", timeout=5).status_code
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            seen.append(code)
            if code == 200:
                return seen
            time.sleep(0.02)
        raise AssertionError(f"not ready in {timeout_s}s:\n{self.output()}")


@contextmanager
def sim(tmp_path: Path, *flags: str, model_path: str = "zai-org/GLM-4.7-FP8") -> Iterator[SimProcess]:
    port = free_port()
    log = tmp_path / f"sim-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "tuner.runtime.sim",
        "--model-path",
        model_path,
        "--tp",
        "8",
        "--port",
        str(port),
        *flags,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield SimProcess(proc, port, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def sse_events(response: httpx.Response) -> list[dict | str]:
    events: list[dict | str] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_health_is_503_while_loading_then_200_with_the_ready_line(tmp_path: Path) -> None:
    with sim(tmp_path, "--time-scale", "20", "--startup-seconds", "20") as server:
        seen = server.wait_ready()
        assert seen[0] == 503 and seen[-1] == 200
        assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == "zai-org/GLM-4.7-FP8"
        assert "The server is fired up and ready to roll!" in server.output()
        assert "max_total_num_tokens=" in server.output()


def test_streaming_chat_metrics_generate_and_clean_shutdown(tmp_path: Path) -> None:
    flags = (
        "--time-scale",
        "50",
        "--startup-seconds",
        "2",
        "--enable-metrics",
        "--extra-metric-labels",
        '{"trial": "7"}',
        "--cuda-graph-max-bs-decode",
        "64",
    )
    with sim(tmp_path, *flags) as server:
        server.wait_ready()
        content = tokenizer.make_text(300, seed=1)
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 20,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            events = sse_events(response)
        assert events[-1] == "[DONE]"
        chunks = [e for e in events[:-1] if isinstance(e, dict)]
        deltas = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
        assert sum(1 for d in deltas if d) == 20
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["usage"] == {
            "prompt_tokens": 300 + 2,
            "completion_tokens": 20,
            "total_tokens": 322,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

        # native /generate with token ids: exact prompt length, prefix cache on the repeat
        ids = tokenizer.encode(tokenizer.make_text(500, seed=2))
        req = {"input_ids": ids, "sampling_params": {"max_new_tokens": 8, "ignore_eos": True}}
        first = httpx.post(server.url + "/generate", json=req, timeout=30).json()
        again = httpx.post(server.url + "/generate", json=req, timeout=30).json()
        assert first["meta_info"]["prompt_tokens"] == 500 and first["meta_info"]["completion_tokens"] == 8
        assert again["meta_info"]["cached_tokens"] >= 499
        assert again["output_ids"] == first["output_ids"]  # same seed + prompt -> same tokens

        metrics = httpx.get(server.url + "/metrics").text
        for name in (
            "sglang:time_to_first_token_seconds_bucket",
            "sglang:inter_token_latency_seconds_count",
            "sglang:e2e_request_latency_seconds_sum",
            "sglang:queue_time_seconds_count",
            "sglang:prompt_tokens_total",
            "sglang:generation_tokens_total",
            "sglang:cached_tokens_total",
            "sglang:num_requests_total",
            "sglang:num_aborted_requests_total",
            "sglang:num_running_reqs",
            "sglang:num_queue_reqs",
            "sglang:token_usage",
            "sglang:num_used_tokens",
            "sglang:max_total_num_tokens",
            "sglang:gen_throughput",
            "sglang:cache_hit_rate",
            "sglang:spec_accept_length",
            "sglang:spec_accept_rate",
        ):
            assert name in metrics, name
        # the load has stopped: gauges are back at their idle values, as SGLang 0.5.23 republishes them
        gauges = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith(("sglang:gen_throughput{", "sglang:num_running_reqs{", "sglang:num_queue_reqs{"))}
        assert gauges == {"sglang:gen_throughput": 0.0, "sglang:num_running_reqs": 0.0, "sglang:num_queue_reqs": 0.0}
        requests = [line for line in metrics.splitlines() if line.startswith("sglang:num_requests_total{")]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in requests) == 3.0  # streamed and not, as labelled
        assert 'is_streaming="true",model_name="zai-org/GLM-4.7-FP8",trial="7"} 1.0' in "\n".join(requests)
        assert (
            'sglang:inter_token_latency_seconds_count{engine_type="unified",model_name="zai-org/GLM-4.7-FP8",'
            'trial="7"} 33.0' in metrics
        )
        assert any(line.startswith("sglang:time_to_first_token_seconds_bucket{") and 'le="0.1"' in line
                   for line in metrics.splitlines())

        info = httpx.get(server.url + "/server_info").json()
        assert info["chunked_prefill_size"] == 8192 and info["cuda_graph_max_bs"] == 64
        assert info["mem_fraction_static"] > 0.8 and info["max_running_requests"] >= 48
        assert info["internal_states"][0]["memory_usage"]["token_capacity"] == info["max_total_num_tokens"]
        assert httpx.post(server.url + "/flush_cache").status_code == 200

        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0


def test_speculative_decoding_reports_acceptance(tmp_path: Path) -> None:
    flags = (
        "--time-scale",
        "50",
        "--startup-seconds",
        "2",
        "--enable-metrics",
        "--speculative-algorithm",
        "NEXTN",
        "--cuda-graph-max-bs-decode",
        "8",
    )
    with sim(tmp_path, *flags) as server:
        server.wait_ready()
        req = {"text": tokenizer.make_text(200, seed=3), "sampling_params": {"max_new_tokens": 120}}
        meta = httpx.post(server.url + "/generate", json=req, timeout=30).json()["meta_info"]
        assert meta["completion_tokens"] == 120
        assert 1.5 < meta["spec_accept_length"] <= 4.0
        assert meta["spec_verify_ct"] < 100
        info = httpx.get(server.url + "/server_info").json()
        assert info["max_running_requests"] == 48
        assert info["internal_states"][0]["avg_spec_accept_length"] > 1.5
        assert "sglang:spec_accept_length{" in httpx.get(server.url + "/metrics").text


def test_out_of_memory_flags_exit_non_zero_with_the_oom_log(tmp_path: Path) -> None:
    with sim(
        tmp_path, "--time-scale", "50", "--startup-seconds", "2", "--mem-fraction-static", "0.95"
    ) as server:
        assert server.proc.wait(timeout=60) != 0
        assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate" in server.output()
        assert "ready to roll" not in server.output()


QWEN3 = "Qwen/Qwen3-235B-A22B-FP8"


def test_qwen3_moe_at_tp8_with_expert_parallel_serves_and_counts_tokens(tmp_path: Path) -> None:
    flags = ("--ep-size", "8", "--time-scale", "50", "--startup-seconds", "2", "--enable-metrics")
    with sim(tmp_path, *flags, model_path=QWEN3) as server:
        server.wait_ready()
        assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == QWEN3
        body = {"model": QWEN3, "prompt": tokenizer.make_text(200, seed=3), "max_tokens": 12}
        reply = httpx.post(server.url + "/v1/completions", json=body, timeout=30).json()
        assert reply["usage"]["completion_tokens"] == 12
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        generated = [line for line in metrics.splitlines() if line.startswith("sglang:generation_tokens_total")]
        assert generated and float(generated[0].split()[-1]) >= 12


def test_qwen3_fp8_experts_split_by_tp8_are_refused_in_one_line(tmp_path: Path) -> None:
    with sim(tmp_path, "--time-scale", "50", "--startup-seconds", "2", model_path=QWEN3) as server:
        assert server.proc.wait(timeout=60) != 0
        out = server.output().strip().splitlines()
        assert len(out) == 1 and "192 is not a multiple of the FP8 weight block 128" in out[0]
        assert "--ep-size 8" in out[0]

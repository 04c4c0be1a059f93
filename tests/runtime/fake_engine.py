"""A tiny stand-in for an SGLang server, for launcher/loadgen/scraper tests that must not wait for the
simulator: /health, /v1/models, /server_info, /metrics (SGLang names), streaming /v1/completions,
/v1/chat/completions and /generate. Modes make it misbehave on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TTFT_BUCKETS = [0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400]
ITL_BUCKETS = [0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080,
               0.100, 0.200, 0.400, 0.600, 0.800, 1, 2, 4, 6, 8]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-path", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--enable-metrics", action="store_true")
    p.add_argument("--mode", default="ok",
                   choices=["ok", "never-ready", "garbage-metrics", "oom", "die-after-requests",
                            "no-metrics"])
    p.add_argument("--ttft-s", type=float, default=0.05)
    p.add_argument("--itl-s", type=float, default=0.005)
    p.add_argument("--ready-after-s", type=float, default=0.3)
    p.add_argument("--die-after", type=int, default=5)
    p.add_argument("--spawn-child", action="store_true", help="start a sleeping child in the same group")
    args = p.parse_args()

    if args.spawn_child:
        import subprocess

        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"child pid {child.pid} in process group {os.getpgid(0)}", flush=True)
    print(f"loading {args.model_path}", flush=True)
    if args.mode == "oom":
        time.sleep(0.2)
        print("Traceback (most recent call last):\n  File \"model_runner.py\", line 1\n"
              "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.", flush=True)
        sys.exit(1)

    reg = CollectorRegistry()
    labels = ["model_name"]
    ttft_h = Histogram("sglang:time_to_first_token_seconds", "ttft", labels, buckets=TTFT_BUCKETS,
                       registry=reg)
    itl_h = Histogram("sglang:inter_token_latency_seconds", "itl", labels, buckets=ITL_BUCKETS, registry=reg)
    e2e_h = Histogram("sglang:e2e_request_latency_seconds", "e2e", labels,
                      buckets=[0.1, 0.2, 0.4, 0.8, 1, 2, 5, 10, 20, 60], registry=reg)
    prompt_c = Counter("sglang:prompt_tokens", "p", labels, registry=reg)
    gen_c = Counter("sglang:generation_tokens", "g", labels, registry=reg)
    req_c = Counter("sglang:num_requests", "n", labels, registry=reg)
    running_g = Gauge("sglang:num_running_reqs", "r", labels, registry=reg)
    queue_g = Gauge("sglang:num_queue_reqs", "q", labels, registry=reg)
    m = args.model_path
    state = {"ready_at": time.monotonic() + args.ready_after_s, "served": 0, "running": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            ready = args.mode != "never-ready" and time.monotonic() >= state["ready_at"]
            if self.path in ("/health", "/health_generate"):
                self._send(200 if ready else 503, b"{}")
            elif self.path == "/v1/models":
                self._send(200, json.dumps({"data": [{"id": m}]}).encode())
            elif self.path == "/server_info":
                self._send(200, json.dumps({"version": "0.0-fake", "model_path": m,
                                            "speculative_algorithm": None,
                                            "internal_states": [{"memory_usage": {}}]}).encode())
            elif self.path == "/metrics":
                if args.mode == "garbage-metrics":
                    self._send(200, b"<html><body>this is not prometheus</body></html>\n", "text/html")
                elif args.mode == "no-metrics":
                    self._send(200, b"# nothing here\nother_metric 1\n", "text/plain")
                else:
                    self._send(200, generate_latest(reg), "text/plain; version=0.0.4")
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(n) or b"{}")
            if self.path == "/flush_cache":
                self._send(200, b"{}")
                return
            if self.path not in ("/v1/completions", "/v1/chat/completions", "/generate"):
                self._send(404, b'{"error": "not found"}')
                return
            with lock:
                state["served"] += 1
                served = state["served"]
                state["running"] += 1
                running_g.labels(m).set(state["running"])
            if args.mode == "die-after-requests" and served > args.die_after:
                os._exit(3)
            if self.path == "/generate":
                prompt = body["text"]
                n_out = body["sampling_params"]["max_new_tokens"]
            elif self.path == "/v1/completions":
                prompt = body["prompt"]
                n_out = body["max_tokens"]
            else:
                prompt = " ".join(msg["content"] for msg in body["messages"])
                n_out = body["max_tokens"]
            n_in = len(prompt.split())
            t0 = time.monotonic()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            time.sleep(args.ttft_s)
            ttft_h.labels(m).observe(time.monotonic() - t0)
            text = ""
            last = time.monotonic()
            for i in range(n_out):
                if i:
                    time.sleep(args.itl_s)
                    now = time.monotonic()
                    itl_h.labels(m).observe(now - last)
                    last = now
                piece = f" tok{i}"
                text += piece
                if self.path == "/generate":
                    chunk = {"text": text, "meta_info": {"prompt_tokens": n_in, "completion_tokens": i + 1,
                                                         "cached_tokens": 0}}
                elif self.path == "/v1/completions":
                    chunk = {"choices": [{"index": 0, "text": piece}]}
                else:
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            if self.path != "/generate":
                usage = {"choices": [], "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                                                  "total_tokens": n_in + n_out}}
                self.wfile.write(f"data: {json.dumps(usage)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            e2e_h.labels(m).observe(time.monotonic() - t0)
            prompt_c.labels(m).inc(n_in)
            gen_c.labels(m).inc(n_out)
            req_c.labels(m).inc()
            with lock:
                state["running"] -= 1
                running_g.labels(m).set(state["running"])
                queue_g.labels(m).set(0)
            self.close_connection = True

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"listening on {args.host}:{args.port}", flush=True)
    if args.mode != "never-ready":
        def announce() -> None:
            time.sleep(max(0.0, state["ready_at"] - time.monotonic()))
            print("The server is fired up and ready to roll!", flush=True)

        threading.Thread(target=announce, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()

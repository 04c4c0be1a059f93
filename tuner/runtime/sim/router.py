"""`python -m tuner.runtime.sim.router`: a simulated SGLang PD router in front of simulated prefill and
decode servers (each its own `python -m tuner.runtime.sim --disaggregation-mode prefill|decode` process).

Its command line follows sglang-router's `python -m sglang_router.launch_router --pd-disaggregation
--prefill URL [BOOTSTRAP_PORT] --decode URL --host H --port P` (several --prefill / --decode are picked
round robin). Each request goes to a prefill server first (which computes the prompt and its first token
only), then to a decode server, which waits the modelled KV transfer and streams the answer; the wall
seconds spent on the prefill server travel in a header so the decode server's TTFT and E2E histograms
cover the whole request. /metrics, /server_info, /model_info and /v1/models are the first decode
server's; /health is 200 only when every server is healthy; /flush_cache flushes them all.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from tuner.runtime.sim.api import PREFILL_ELAPSED_HEADER

log = logging.getLogger("tuner.runtime.sim.router")
GENERATION_PATHS = ("/generate", "/v1/completions", "/v1/chat/completions")
INFO_PATHS = ("/metrics", "/server_info", "/get_server_info", "/model_info", "/v1/models")


class RouterArgsError(ValueError):
    """A command line the router cannot run with; its message says what to fix."""


@dataclass(frozen=True)
class RouterArgs:
    prefill_urls: tuple[str, ...]
    decode_urls: tuple[str, ...]
    host: str
    port: int
    health_timeout_s: float


def _check_url(url: str, flag: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RouterArgsError(f"{flag} {url!r} is not a server URL; give one like http://127.0.0.1:30000")
    return url.rstrip("/")


def parse_router_args(argv: Sequence[str]) -> RouterArgs:
    """Parse the router's command line (sglang-router's spelling). Raises RouterArgsError with one line
    saying what to fix; argparse itself exits 2 on unknown flags, like the real router."""
    p = argparse.ArgumentParser(prog="python -m tuner.runtime.sim.router",
                                description="Simulated SGLang PD router (prefill server, then decode server).")
    p.add_argument("--pd-disaggregation", action="store_true", help="required: route prefill then decode")
    p.add_argument("--prefill", nargs="+", action="append", default=[], metavar="URL [BOOTSTRAP_PORT]",
                   help="a prefill server (its bootstrap port is accepted and ignored)")
    p.add_argument("--decode", action="append", default=[], metavar="URL", help="a decode server")
    p.add_argument("--policy", default="round_robin", choices=("round_robin",))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--health-timeout-s", type=float, default=30.0)
    ns = p.parse_args(list(argv))
    if not ns.pd_disaggregation:
        raise RouterArgsError("the simulated router only does PD disaggregation: add --pd-disaggregation")
    if not ns.prefill or not ns.decode:
        raise RouterArgsError("give at least one --prefill URL and one --decode URL")
    prefill = []
    for entry in ns.prefill:
        if len(entry) > 2 or (len(entry) == 2 and not entry[1].isdigit()):
            raise RouterArgsError(f"--prefill takes URL [BOOTSTRAP_PORT], got {' '.join(entry)!r}")
        prefill.append(_check_url(entry[0], "--prefill"))
    decode = [_check_url(url, "--decode") for url in ns.decode]
    if not 0 < ns.port < 65536:
        raise RouterArgsError(f"--port {ns.port} is not a TCP port (1-65535)")
    return RouterArgs(tuple(prefill), tuple(decode), ns.host, ns.port, ns.health_timeout_s)


def _relay(resp: httpx.Response) -> Response:
    return Response(resp.content, status_code=resp.status_code,
                    media_type=resp.headers.get("content-type", "application/json"))


def create_router_app(args: RouterArgs) -> FastAPI:
    """The router's HTTP app; its httpx client is closed on shutdown."""
    app = FastAPI(title="tuner engine-sim PD router", docs_url=None, redoc_url=None)
    client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0))
    prefills, decodes = itertools.cycle(args.prefill_urls), itertools.cycle(args.decode_urls)
    app.router.on_shutdown.append(client.aclose)

    async def route(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": {"message": "The request body is not JSON."}}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": {"message": "The request body must be a JSON object."}}, status_code=400)
        path = request.url.path
        began = time.monotonic()
        try:
            first = await client.post(next(prefills) + path, json={**body, "stream": False})
        except httpx.HTTPError as exc:
            return JSONResponse({"error": {"message": f"prefill server unreachable: {exc}"}}, status_code=502)
        if first.status_code != 200:
            return _relay(first)
        headers = {PREFILL_ELAPSED_HEADER: f"{time.monotonic() - began:.6f}"}
        try:
            resp = await client.send(client.build_request("POST", next(decodes) + path, json=body,
                                                          headers=headers), stream=True)
        except httpx.HTTPError as exc:
            return JSONResponse({"error": {"message": f"decode server unreachable: {exc}"}}, status_code=502)
        if body.get("stream"):
            return StreamingResponse(resp.aiter_raw(), status_code=resp.status_code,
                                     media_type=resp.headers.get("content-type"),
                                     background=BackgroundTask(resp.aclose))
        await resp.aread()
        await resp.aclose()
        return _relay(resp)

    async def info(request: Request) -> Response:
        try:
            return _relay(await client.get(args.decode_urls[0] + request.url.path))
        except httpx.HTTPError as exc:
            return JSONResponse({"error": {"message": f"decode server unreachable: {exc}"}}, status_code=502)

    async def health() -> Response:
        for url in args.prefill_urls + args.decode_urls:
            try:
                if (await client.get(url + "/health", timeout=args.health_timeout_s)).status_code != 200:
                    return Response(status_code=503)
            except httpx.HTTPError:
                return Response(status_code=503)
        return Response(status_code=200)

    async def flush_cache() -> Response:
        ok = True
        for url in args.prefill_urls + args.decode_urls:
            try:
                ok = (await client.post(url + "/flush_cache")).status_code == 200 and ok
            except httpx.HTTPError:
                ok = False
        return Response("Cache flushed.\n" if ok else "Cache not flushed on every server.\n",
                        status_code=200 if ok else 400)

    for path in GENERATION_PATHS:
        app.add_api_route(path, route, methods=["POST"])
    for path in INFO_PATHS:
        app.add_api_route(path, info, methods=["GET"])
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/health_generate", health, methods=["GET"])
    app.add_api_route("/flush_cache", flush_cache, methods=["POST"])
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run the router until SIGINT/SIGTERM; returns the exit code (1 with one line on a bad command line)."""
    try:
        args = parse_router_args(sys.argv[1:] if argv is None else argv)
    except RouterArgsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log.info(f"PD router: prefill {', '.join(args.prefill_urls)} -> decode {', '.join(args.decode_urls)}")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # uvicorn re-raises the shutdown signal after a graceful exit; make that a no-op so SIGTERM exits 0
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.run(create_router_app(args), host=args.host, port=args.port, log_level="warning")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())

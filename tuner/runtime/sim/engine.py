"""The simulated engine in real time: an asyncio loop that asks the scheduler for the next forward pass,
sleeps its simulated cost divided by --time-scale, then releases the produced tokens to the waiting
HTTP handlers and records SGLang's metrics in wall-clock time (what clients observe).

It owns request handles and timing; batching decisions are scheduler.py's, HTTP is api.py's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from dataclasses import dataclass, field

from tuner.runtime.sim.args import SimServerArgs
from tuner.runtime.sim.cost import Mechanisms, RooflineCostModel, default_cuda_graph_batch_sizes
from tuner.runtime.sim.generation import PhraseBank, TokenGenerator, load_recorded_responses
from tuner.runtime.sim.memory import MemoryPlan
from tuner.runtime.sim.metrics import SimMetrics
from tuner.runtime.sim.profiles import GIB, lookup_gpu, lookup_model
from tuner.runtime.sim.scheduler import Scheduler, SchedulerConfig, SimRequest, StepResult
from tuner.runtime.sim.speculative import (
    EAGLE_FAMILY,
    GeometricSpeculator,
    Speculator,
    TreeSpeculator,
    ngram_params,
)
from tuner.suffix_decoding.params import SuffixParams

# Event-loop lateness (in simulated seconds) that the next step absorbs, like SGLang's overlap scheduler
# hides CPU work behind the GPU; anything later is dropped instead of squeezing later steps shorter.
CATCH_UP_SIM_S = 0.005
IDLE_RETRY_S = 0.01

log = logging.getLogger("tuner.runtime.sim")


class RequestRejected(Exception):
    """A request the engine refuses (too long for the context or the KV pool); HTTP 400."""


@dataclass
class Delivery:
    token_ids: list[int]
    finished: bool
    aborted: bool = False


@dataclass(eq=False)
class RequestHandle:
    req: SimRequest
    arrival_s: float
    queue: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
    first_token_s: float | None = None
    last_token_s: float | None = None
    finished_s: float | None = None
    streaming: bool = False  # SGLang labels TTFT, E2E and token counters with is_streaming

    @property
    def rid(self) -> str:
        return self.req.rid


def build_speculator(args: SimServerArgs) -> Speculator | None:
    alg = args.speculative_algorithm
    if alg is None:
        return None
    drafts = args.speculative_num_draft_tokens or 1
    if alg in EAGLE_FAMILY:
        model = lookup_model(args.sim_model_profile)
        assert model is not None
        return GeometricSpeculator(
            alg,
            model.mtp_accept_prob,
            args.speculative_num_steps or 1,
            args.speculative_eagle_topk or 1,
            drafts,
            args.seed,
        )
    if alg == "SUFFIX":
        return TreeSpeculator(
            alg,
            SuffixParams(
                cache_max_depth=args.speculative_suffix_cache_max_depth,
                max_spec_factor=args.speculative_suffix_max_spec_factor,
                max_spec_offset=args.speculative_suffix_max_spec_offset,
                min_token_prob=args.speculative_suffix_min_token_prob,
                num_draft_tokens=drafts,
            ),
            args.speculative_suffix_max_cached_requests,
        )
    return TreeSpeculator(alg, ngram_params(drafts))


def captured_graph_sizes(args: SimServerArgs) -> tuple[int, ...]:
    """CUDA-graph batch sizes actually captured (none with --disable-cuda-graph)."""
    if args.disable_cuda_graph:
        return ()
    sizes = (
        list(args.cuda_graph_bs)
        if args.cuda_graph_bs
        else default_cuda_graph_batch_sizes(args.cuda_graph_max_bs)
    )
    if args.max_running_requests is not None:
        sizes = [s for s in sizes if s <= args.max_running_requests] or [min(sizes)]
    return tuple(sizes)


class Engine:
    def __init__(self, args: SimServerArgs, plan: MemoryPlan, metrics: SimMetrics | None) -> None:
        model, gpu = lookup_model(args.sim_model_profile), lookup_gpu(args.gpu)
        assert model is not None and gpu is not None and args.max_running_requests is not None
        self.args = args
        self.plan = plan
        self.metrics = metrics
        self.cost_model = RooflineCostModel(model, gpu, args.tp_size, args.kv_dtype_bytes, Mechanisms(
            torch_compile_max_bs=args.torch_compile_max_bs if args.enable_torch_compile else 0,
            shared_experts_fused=not args.disable_shared_experts_fusion,
            attn_dp_size=args.attn_dp_size,
            overlap_schedule=not args.disable_overlap_schedule,
            moe_ep_size=args.ep_size,
        ))
        self.graph_sizes = captured_graph_sizes(args)
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_running_requests=args.max_running_requests,
                max_total_num_tokens=plan.max_total_num_tokens,
                kv_transferred=args.disaggregation_mode == "decode",
                chunked_prefill_size=args.chunked_prefill_size,
                max_prefill_tokens=args.max_prefill_tokens,
                schedule_policy=args.schedule_policy,
                schedule_conservativeness=args.schedule_conservativeness,
                page_size=args.page_size,
                # SGLang's decode server keeps no radix cache unless --disaggregation-decode-enable-radix-cache
                disable_radix_cache=args.disable_radix_cache or args.disaggregation_mode == "decode",
                enable_mixed_chunk=args.enable_mixed_chunk,
                cuda_graph_batch_sizes=self.graph_sizes,
                speculative_algorithm=args.speculative_algorithm,
                speculative_num_steps=args.speculative_num_steps or 0,
                speculative_eagle_topk=args.speculative_eagle_topk or 1,
                speculative_num_draft_tokens=args.speculative_num_draft_tokens or 1,
                decode_log_interval=args.decode_log_interval,
                seed=args.seed,
            ),
            self.cost_model,
            build_speculator(args),
        )
        self.phrases = PhraseBank(args.seed)
        self.recorded = load_recorded_responses(args.sim_response_trace) if args.sim_response_trace else None
        self.ready = False
        self._handles: dict[str, RequestHandle] = {}
        self._wake = asyncio.Event()
        self._stopped = False
        self._ids = itertools.count()
        self._last_refresh_s: float | None = None
        self.last_gen_throughput = 0.0
        self.last_output_s = 0.0  # loop time of the last token released to anyone
        self.busy_wall_s = 0.0  # wall time the simulated GPU was busy
        self.lag_wall_s = 0.0  # event-loop lateness that could not be absorbed (stretches latencies)
        self._lag_warned = False
        if metrics is not None:
            metrics.max_total_num_tokens.set(plan.max_total_num_tokens)

    # ---- requests -------------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        *,
        tool_like: bool = False,
        rid: str | None = None,
        streaming: bool = False,
        internal: bool = False,
        prefill_elapsed_s: float = 0.0,
    ) -> RequestHandle:
        """Queue one request. With --disaggregation-mode prefill the server computes the prompt and its
        first token only (the router then sends the request to a decode server); with decode the
        prompt's KV arrives from a prefill server after `cost_model.kv_transfer_s` simulated seconds, and
        `prefill_elapsed_s` (wall seconds the router spent on the prefill server) is counted into this
        request's TTFT and E2E latency. Raises RequestRejected for prompts the engine refuses."""
        if not prompt_ids:
            raise RequestRejected("The input is empty.")
        if max_new_tokens < 0:
            raise RequestRejected("max_new_tokens must be >= 0.")
        total = len(prompt_ids) + max_new_tokens
        if total > self.args.context_length:
            raise RequestRejected(
                "Requested token count exceeds the model's maximum context length of "
                f"{self.args.context_length} tokens. You requested a total of {total} tokens: "
                f"{len(prompt_ids)} tokens from the input messages and {max_new_tokens} tokens for the "
                "completion."
            )
        if total > self.plan.max_total_num_tokens:
            raise RequestRejected(
                f"The request needs {total} KV cache tokens but the pool holds "
                f"{self.plan.max_total_num_tokens} (max_total_num_tokens)."
            )
        rid = rid or uuid.uuid4().hex
        if rid in self._handles:
            raise RequestRejected(f"Duplicate request id {rid}.")
        recorded = self.recorded.response_for(prompt_ids) if self.recorded is not None else None
        generator = TokenGenerator(prompt_ids, self.args.seed, self.phrases, tool_like=tool_like,
                                   recorded=recorded or ())
        req = SimRequest(
            rid=rid,
            prompt_ids=list(prompt_ids),
            max_new_tokens=max_new_tokens,
            generator=generator,
            internal=internal,
        )
        if self.args.disaggregation_mode == "prefill" and not internal:
            req.max_new_tokens = min(max_new_tokens, 1)  # the decode server generates the rest
        loop = asyncio.get_running_loop()
        handle = RequestHandle(req, loop.time() - max(0.0, prefill_elapsed_s), streaming=streaming)
        self._handles[rid] = handle
        if self.args.disaggregation_mode == "decode" and not internal:
            req.state = "waiting"
            loop.call_later(self.cost_model.kv_transfer_s(len(prompt_ids)) / self.args.time_scale,
                            self._kv_arrived, req)
            return handle
        self.scheduler.submit(req)
        self._wake.set()
        return handle

    def _kv_arrived(self, req: SimRequest) -> None:
        if self._stopped or req.rid not in self._handles:
            return  # aborted while its KV was in flight
        self.scheduler.submit(req)
        self._wake.set()

    def abort(self, handle: RequestHandle) -> None:
        """Client went away: drop the request and count it as aborted."""
        if self._handles.pop(handle.rid, None) is None:
            return
        if self.scheduler.abort(handle.req) and self.metrics is not None and not handle.req.internal:
            self.metrics.num_aborted.inc()

    def abort_all(self) -> None:
        for handle in list(self._handles.values()):
            self.abort(handle)
            handle.queue.put_nowait(Delivery([], finished=True, aborted=True))

    def flush_cache(self) -> bool:
        return self.scheduler.flush_cache()

    async def health_generate(self, timeout_s: float) -> bool:
        """SGLang's /health: healthy once a one-token generation comes back, or once any request made
        progress since the check began (a busy server is a live one)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        handle = self.submit([1], 1, internal=True, rid=f"HEALTH_CHECK_{next(self._ids)}")
        while loop.time() - began < timeout_s:
            try:
                delivery = await asyncio.wait_for(handle.queue.get(), 0.05)
            except TimeoutError:
                if self.last_output_s > began:
                    self.abort(handle)
                    return True
                continue
            if delivery.finished:
                return not delivery.aborted
        self.abort(handle)
        return False

    # ---- the loop -------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        busy_until = loop.time()
        scale = self.args.time_scale
        while not self._stopped:
            step = self.scheduler.schedule()
            if step is None:
                self._wake.clear()
                if self.scheduler.has_work():
                    await asyncio.sleep(IDLE_RETRY_S)
                else:
                    self._publish_idle()
                    await self._wake.wait()
                busy_until = loop.time()
                continue
            now = loop.time()
            window = CATCH_UP_SIM_S / scale
            if now - busy_until > window:
                self.lag_wall_s += now - busy_until - window
            start = max(busy_until, now - window)
            if self.metrics is not None:
                for req in step.newly_scheduled:
                    handle = self._handles.get(req.rid)
                    if handle is not None and not req.internal:
                        self.metrics.queue_time.observe(max(0.0, now - handle.arrival_s))
                        self.metrics.realtime_prefill_cache.inc(req.cached_tokens)
            end = start + step.cost_s / scale
            await asyncio.sleep(max(0.0, end - loop.time()))
            busy_until = end
            self.busy_wall_s += step.cost_s / scale
            result = self.scheduler.complete(step)
            self._deliver(result, loop.time())
            self._check_lag()

    @property
    def lag_fraction(self) -> float:
        """How much the event loop stretched simulated time (0: none; 0.2: latencies ~20% too long)."""
        return self.lag_wall_s / self.busy_wall_s if self.busy_wall_s else 0.0

    def _check_lag(self) -> None:
        if not self._lag_warned and self.busy_wall_s > 2.0 and self.lag_fraction > 0.1:
            self._lag_warned = True
            log.warning(
                f"[sim] the event loop cannot keep up with --time-scale {self.args.time_scale}: simulated "
                f"steps run {self.lag_fraction:.0%} longer than modelled, so measured latencies are "
                "inflated; lower --time-scale or the request rate."
            )

    def _deliver(self, result: StepResult, now: float) -> None:
        m = self.metrics
        if result.emitted:
            self.last_output_s = now
        for req, ids in result.emitted:
            handle = self._handles.get(req.rid)
            if handle is None:
                continue
            if m is not None and not req.internal and ids:
                if handle.first_token_s is None:
                    m.observe_first_token(now - handle.arrival_s, handle.streaming)
                else:
                    m.observe_tokens(now - (handle.last_token_s or now), len(ids))
            if ids:
                if handle.first_token_s is None:
                    handle.first_token_s = now
                handle.last_token_s = now
            handle.queue.put_nowait(Delivery(list(ids), finished=req.state == "finished"))
        for req in result.finished:
            handle = self._handles.pop(req.rid, None)
            if handle is None:
                continue
            handle.finished_s = now
            if m is not None and not req.internal:
                m.observe_finished(
                    len(req.prompt_ids), len(req.output_ids), req.cached_tokens, now - handle.arrival_s,
                    streaming=handle.streaming,
                )
        if m is None:
            return
        m.realtime_prefill_compute.inc(result.prefill_compute_tokens)
        m.realtime_decode.inc(result.decode_tokens)
        (m.graph_passes if result.cuda_graph else m.eager_passes).inc()
        stats = result.stats
        if stats is None:
            return
        m.num_running_reqs.set(stats.num_running_reqs)
        m.num_queue_reqs.set(stats.num_queue_reqs)
        m.num_used_tokens.set(stats.num_used_tokens)
        m.token_usage.set(stats.token_usage)
        m.max_total_num_tokens.set(stats.max_total_num_tokens)
        m.cache_hit_rate.set(stats.cache_hit_rate)
        if self.scheduler.speculator is not None:
            m.spec_accept_length.set(stats.spec_accept_length)
            m.spec_accept_rate.set(stats.spec_accept_rate)
        if result.kind != "prefill":
            if self._last_refresh_s is not None and now > self._last_refresh_s:
                self.last_gen_throughput = stats.decode_tokens / (now - self._last_refresh_s)
                m.gen_throughput.set(self.last_gen_throughput)
            self._last_refresh_s = now

    def _publish_idle(self) -> None:
        """SGLang 0.5.23 republishes its gauges when the scheduler goes idle (the running-requests gauge
        disagreeing with the empty batch triggers it at once): nothing running, no generation throughput,
        the queue and the token pool as they are."""
        m, s = self.metrics, self.scheduler
        if m is None:
            return
        m.num_running_reqs.set(len(s.running))
        m.num_queue_reqs.set(len(s.waiting))
        m.num_used_tokens.set(s.used_tokens)
        capacity = self.plan.max_total_num_tokens
        m.token_usage.set(s.used_tokens / capacity if capacity else 0.0)
        m.gen_throughput.set(0.0)
        self.last_gen_throughput = 0.0
        self._last_refresh_s = None

    # ---- introspection --------------------------------------------------------------------------
    def internal_states(self) -> dict[str, object]:
        s, plan = self.scheduler, self.plan
        states: dict[str, object] = {
            "memory_usage": {
                "weight": round((plan.weight_bytes + plan.draft_weight_bytes) / GIB, 2),
                "kvcache": round(plan.max_total_num_tokens * plan.kv_cell_bytes / GIB, 2),
                "graph": round(plan.cuda_graph_bytes / GIB, 2),
                "token_capacity": plan.max_total_num_tokens,
            },
            "last_gen_throughput": self.last_gen_throughput,
            "num_running_reqs": len(s.running),
            "num_queue_reqs": len(s.waiting),
            "num_used_tokens": s.used_tokens,
            "total_retractions": s.total_retractions,
            "sim_lag_fraction": round(self.lag_fraction, 4),
        }
        if s.speculator is not None:
            states["avg_spec_accept_length"] = s.avg_spec_accept_length
        return states

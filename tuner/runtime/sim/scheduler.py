"""Continuous-batching scheduler of the simulated server, modelled on SGLang's: prefill batches (chunked,
admitted against KV capacity and --max-running-requests) take priority over decode steps, unless
--enable-mixed-chunk mixes them; the KV pool and the radix prefix cache are shared; when the pool runs
out during decode the newest running request is retracted to the queue.

Pure and synchronous: schedule() plans one forward pass and returns its simulated cost, complete()
applies its results. Wall-clock time, HTTP and metrics belong to engine.py.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from tuner.runtime.sim.cost import ForwardBatch, RooflineCostModel, padded_graph_batch_size
from tuner.runtime.sim.generation import TokenGenerator
from tuner.runtime.sim.kv_pool import TokenPool
from tuner.runtime.sim.prefix_cache import RadixCache, RadixNode
from tuner.runtime.sim.speculative import EAGLE_FAMILY, Speculator

LPM_MAX_QUEUE = 128  # longest-prefix-match ordering falls back to FCFS above this queue length
RETRACT_RATIO_BUMP = 0.1
RATIO_DECAY_STEPS = 600


@dataclass(frozen=True)
class SchedulerConfig:
    max_running_requests: int
    max_total_num_tokens: int
    chunked_prefill_size: int  # -1: no chunking
    max_prefill_tokens: int
    schedule_policy: str = "fcfs"
    schedule_conservativeness: float = 1.0
    page_size: int = 1
    disable_radix_cache: bool = False
    enable_mixed_chunk: bool = False
    cuda_graph_batch_sizes: tuple[int, ...] = ()  # empty: CUDA graphs disabled
    speculative_algorithm: str | None = None
    speculative_num_steps: int = 0
    speculative_eagle_topk: int = 1
    speculative_num_draft_tokens: int = 1
    decode_log_interval: int = 40
    clip_max_new_tokens: int = 4096
    seed: int = 0
    # --disaggregation-mode decode: prompts arrive with their KV computed by a prefill server, so admitting
    # one costs no compute and decode steps never wait behind a prefill (no chunking, no token budget)
    kv_transferred: bool = False


RequestState = Literal["waiting", "prefilling", "running", "finished", "aborted"]


@dataclass(eq=False)
class SimRequest:
    rid: str
    prompt_ids: list[int]
    max_new_tokens: int
    generator: TokenGenerator
    internal: bool = False  # health checks: kept out of metrics
    output_ids: list[int] = field(default_factory=list)
    state: RequestState = "waiting"
    prefix_len: int = 0  # tokens of this request held (and locked) in the radix tree
    prefix_node: RadixNode | None = None
    computed_len: int = 0  # tokens whose KV exists
    own_tokens: int = 0  # pool tokens allocated to this request outside the tree
    cached_tokens: int = 0  # prompt tokens served by the prefix cache at the first prefill
    admitted_seq: int = 0
    scheduled_once: bool = False
    verify_ct: int = 0
    spec_tokens: int = 0  # tokens emitted by verify passes
    num_retractions: int = 0

    @property
    def seq_len(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def fill_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def remaining_new_tokens(self) -> int:
        return self.max_new_tokens - len(self.output_ids)


@dataclass
class PrefillEntry:
    req: SimRequest
    start: int  # computed tokens before this chunk
    extend_tokens: int
    completes: bool


@dataclass
class Step:
    kind: Literal["prefill", "decode", "mixed"]
    prefill: list[PrefillEntry]
    decode: list[SimRequest]
    batch: ForwardBatch
    cost_s: float
    newly_scheduled: list[SimRequest]  # first time a request leaves the queue (queue time ends)
    retracted: list[SimRequest]


@dataclass(frozen=True)
class SchedulerStats:
    """What the gauges show; refreshed on prefill batches and every decode_log_interval decode steps."""

    num_running_reqs: int
    num_queue_reqs: int
    num_used_tokens: int
    max_total_num_tokens: int
    token_usage: float
    cache_hit_rate: float
    spec_accept_length: float
    spec_accept_rate: float
    decode_tokens: int  # tokens generated since the previous refresh


@dataclass
class StepResult:
    emitted: list[tuple[SimRequest, list[int]]]
    finished: list[SimRequest]
    stats: SchedulerStats | None
    cuda_graph: bool
    kind: str
    prefill_compute_tokens: int
    decode_tokens: int


class Scheduler:
    def __init__(
        self, config: SchedulerConfig, cost_model: RooflineCostModel, speculator: Speculator | None = None
    ) -> None:
        self.cfg = config
        self.cost_model = cost_model
        self.speculator = speculator if config.speculative_algorithm else None
        self.pool = TokenPool(config.max_total_num_tokens)
        self.cache = None if config.disable_radix_cache else RadixCache(config.page_size)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.chunked: SimRequest | None = None
        self._admit_counter = 0
        self._rng = random.Random(config.seed)
        c = max(0.0, config.schedule_conservativeness)
        self._init_ratio = min(1.0, 0.7 * c)
        self._min_ratio = min(self._init_ratio, 0.14 * c)
        self.new_token_ratio = self._init_ratio
        self._decode_steps = 0
        self._interval_decode_tokens = 0
        self._interval_verify = 0
        self._interval_spec_tokens = 0
        self.total_verify = 0
        self.total_spec_tokens = 0
        self.total_retractions = 0

    # ---- queries --------------------------------------------------------------------------------
    @property
    def tokens_per_decode_seq(self) -> int:
        return self.cfg.speculative_num_draft_tokens if self.speculator else 1

    @property
    def evictable_tokens(self) -> int:
        return self.cache.evictable_tokens if self.cache else 0

    @property
    def available_tokens(self) -> int:
        return self.pool.free_tokens + self.evictable_tokens

    @property
    def used_tokens(self) -> int:
        return self.cfg.max_total_num_tokens - self.available_tokens

    @property
    def avg_spec_accept_length(self) -> float:
        return self.total_spec_tokens / self.total_verify if self.total_verify else 0.0

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.chunked)

    def _pages(self, n: int) -> int:
        p = self.cfg.page_size
        return -(-n // p) * p

    def _page_floor(self, n: int) -> int:
        return n // self.cfg.page_size * self.cfg.page_size

    # ---- request lifecycle ----------------------------------------------------------------------
    def submit(self, req: SimRequest) -> None:
        req.state = "waiting"
        self.waiting.append(req)

    def abort(self, req: SimRequest) -> bool:
        """Drop a request wherever it is; returns False if it had already finished."""
        if req.state in ("finished", "aborted"):
            return False
        if req in self.waiting:
            self.waiting.remove(req)
        if req in self.running:
            self.running.remove(req)
        if self.chunked is req:
            self.chunked = None
        self._release(req, keep_in_cache=False)
        req.state = "aborted"
        if self.speculator:
            self.speculator.on_finish(req)
        return True

    def flush_cache(self) -> bool:
        """Clear the prefix cache and the speculator's memory of earlier outputs (the SUFFIX global tree);
        refused (False) while requests are queued or running."""
        if self.has_work():
            return False
        if self.cache:
            freed = self.cache.total_tokens
            self.cache.reset()
            self.pool.release(freed)
        if self.speculator:
            self.speculator.reset()
        return True

    # ---- KV bookkeeping -------------------------------------------------------------------------
    def _ensure_free(self, n: int) -> bool:
        if n <= self.pool.free_tokens:
            return True
        if self.cache:
            self.pool.release(self.cache.evict(n - self.pool.free_tokens))
        return n <= self.pool.free_tokens

    def _alloc(self, req: SimRequest, n: int) -> None:
        if n <= 0:
            return
        if not self._ensure_free(n) or not self.pool.alloc(n):
            raise AssertionError("KV pool exhausted after admission checks")
        req.own_tokens += n

    def _cache_progress(self, req: SimRequest, upto: int) -> None:
        """Move req's first `upto` computed tokens (whole pages) into the radix tree."""
        if self.cache is None:
            return
        aligned = self._page_floor(upto)
        if aligned <= req.prefix_len:
            return
        new_tokens, node = self.cache.insert(req.fill_ids()[:aligned])
        moved = aligned - req.prefix_len
        req.own_tokens -= moved
        self.pool.release(moved - new_tokens)  # duplicates of what another request cached first
        self.cache.inc_lock(node)
        if req.prefix_node is not None:
            self.cache.dec_lock(req.prefix_node)
        req.prefix_node, req.prefix_len = node, aligned

    def _release(self, req: SimRequest, keep_in_cache: bool) -> None:
        if keep_in_cache and self.cache is not None:
            self._cache_progress(req, min(req.seq_len, req.prefix_len + req.own_tokens))
        self.pool.release(req.own_tokens)
        req.own_tokens = 0
        if self.cache is not None and req.prefix_node is not None:
            self.cache.dec_lock(req.prefix_node)
        req.prefix_node, req.prefix_len, req.computed_len = None, 0, 0

    def _reserved_tokens(self) -> float:
        """KV the running requests will still need (SGLang's new_token_ratio estimate)."""
        clip = self.cfg.clip_max_new_tokens
        reserved = sum(min(r.remaining_new_tokens, clip) for r in self.running) * self.new_token_ratio
        chunked = self.chunked
        if chunked is not None:  # the rest of its prompt, not yet allocated
            reserved += max(0, self._pages(chunked.seq_len) - chunked.prefix_len - chunked.own_tokens)
            reserved += min(chunked.remaining_new_tokens, clip) * self.new_token_ratio
        return reserved

    # ---- planning -------------------------------------------------------------------------------
    def _ordered_waiting(self) -> list[SimRequest]:
        queue = list(self.waiting)
        policy = self.cfg.schedule_policy
        if policy in ("lpm", "dfs-weight") and self.cache is not None and len(queue) <= LPM_MAX_QUEUE:
            lengths = {id(r): self.cache.match_prefix(r.fill_ids())[0] for r in queue}
            queue.sort(key=lambda r: -lengths[id(r)])
        elif policy == "lof":
            queue.sort(key=lambda r: -r.max_new_tokens)
        elif policy == "random":
            self._rng.shuffle(queue)
        return queue

    def _form_prefill(self, newly: list[SimRequest]) -> list[PrefillEntry]:
        cfg = self.cfg
        entries: list[PrefillEntry] = []
        rem_total = cfg.max_prefill_tokens if not cfg.kv_transferred else cfg.max_total_num_tokens
        rem_chunk: int | None = (
            cfg.chunked_prefill_size if cfg.chunked_prefill_size > 0 and not cfg.kv_transferred else None
        )
        if cfg.enable_mixed_chunk and self.running:
            decode_tokens = len(self.running) * self.tokens_per_decode_seq
            rem_total -= decode_tokens
            if rem_chunk is not None:
                rem_chunk -= decode_tokens
        if self.chunked is not None:
            req = self.chunked
            remaining = req.seq_len - req.computed_len
            take = (
                remaining
                if rem_chunk is None or remaining <= rem_chunk
                else self._page_floor(max(0, rem_chunk))
            )
            alloc = self._pages(req.computed_len + take) - req.prefix_len - req.own_tokens
            if take <= 0 or alloc > self.available_tokens:
                return entries  # decode growth used the reservation: wait for requests to finish
            self._alloc(req, alloc)
            entries.append(PrefillEntry(req, req.computed_len, take, take == remaining))
            if take < remaining:
                return entries
            rem_total -= take
            if rem_chunk is not None:
                rem_chunk -= take
        if not self.waiting:
            return entries
        available = self.available_tokens - self._reserved_tokens()
        busy = bool(self.running) or self.chunked is not None
        for req in self._ordered_waiting():
            if len(self.running) + len(entries) >= cfg.max_running_requests:  # entries hold the chunked one
                break
            if rem_total <= 0 or (rem_chunk is not None and rem_chunk < cfg.page_size):
                break
            fill = req.fill_ids()
            prefix_len, node = (0, None) if self.cache is None else self.cache.match_prefix(fill)
            if prefix_len >= len(fill):  # always recompute the last page to get logits
                prefix_len = max(0, self._page_floor(len(fill) - 1))
                prefix_len, node = (
                    (0, None) if self.cache is None else self.cache.match_prefix(fill[:prefix_len])
                )
            extend = len(fill) - prefix_len
            need = extend + min(req.remaining_new_tokens, cfg.clip_max_new_tokens) * self.new_token_ratio
            if need > available and (busy or entries):
                break
            take = extend
            if rem_chunk is not None and extend > rem_chunk:
                take = self._page_floor(rem_chunk)
                if take <= 0:
                    break
            elif extend > rem_total and entries:
                break
            # the matched path gets locked, so its tokens cannot be evicted to make room for this one
            if self._pages(prefix_len + take) - prefix_len > self.pool.free_tokens + max(
                0, self.evictable_tokens - prefix_len
            ):
                break
            # admit
            self.waiting.remove(req)
            req.state = "prefilling"
            if node is not None and self.cache is not None:
                self.cache.inc_lock(node)
            req.prefix_node, req.prefix_len, req.computed_len = node, prefix_len, prefix_len
            if not req.scheduled_once:
                req.cached_tokens = min(prefix_len, len(req.prompt_ids))
                req.scheduled_once = True
                newly.append(req)
            self._admit_counter += 1
            req.admitted_seq = self._admit_counter
            self._alloc(req, self._pages(prefix_len + take) - prefix_len)
            entries.append(PrefillEntry(req, prefix_len, take, take == extend))
            available -= need
            if take < extend:
                self.chunked = req
                break
            rem_total -= take
            if rem_chunk is not None:
                rem_chunk -= take
        return entries

    def _retract_newest(self) -> SimRequest:
        victim = max(self.running, key=lambda r: r.admitted_seq)
        self.running.remove(victim)
        self._release(victim, keep_in_cache=False)
        victim.state = "waiting"
        victim.num_retractions += 1
        self.total_retractions += 1
        self.waiting.appendleft(victim)
        self.new_token_ratio = min(1.0, max(self.new_token_ratio, self._init_ratio) + RETRACT_RATIO_BUMP)
        return victim

    def _plan_decode(self, retracted: list[SimRequest]) -> list[SimRequest]:
        tpr = self.tokens_per_decode_seq

        def need(r: SimRequest) -> int:
            return max(0, self._pages(r.seq_len + tpr) - r.prefix_len - r.own_tokens)

        total = sum(need(r) for r in self.running)
        while total > self.available_tokens and self.running:
            retracted.append(self._retract_newest())
            total = sum(need(r) for r in self.running)
        batch = list(self.running)
        for r in batch:
            self._alloc(r, need(r))
        return batch

    def schedule(self) -> Step | None:
        """Plan the next forward pass (allocating its KV, retracting if needed), or None when idle."""
        newly: list[SimRequest] = []
        retracted: list[SimRequest] = []
        prefill = self._form_prefill(newly) if (self.waiting or self.chunked) else []
        decode: list[SimRequest] = []
        if self.running and (not prefill or self.cfg.enable_mixed_chunk or self.cfg.kv_transferred):
            decode = self._plan_decode(retracted)
        if not prefill and not decode:
            return None
        computed = bool(prefill) and not self.cfg.kv_transferred
        kind: Literal["prefill", "decode", "mixed"] = (
            "mixed" if computed and decode else ("prefill" if computed or not decode else "decode")
        )
        batch = self._forward_batch(prefill, decode)
        cost = self.cost_model.forward_s(batch)
        alg = self.cfg.speculative_algorithm
        if self.speculator and decode and alg:
            cost += self.cost_model.draft_s(
                alg,
                len(decode),
                self.cfg.speculative_num_steps,
                self.cfg.speculative_eagle_topk,
                self.cfg.speculative_num_draft_tokens,
                batch.decode_context_tokens,
                batch.cuda_graph,
            )
        if self.speculator and computed and alg in EAGLE_FAMILY:
            cost += self.cost_model.draft_prefill_s(alg, batch.prefill_tokens)
        return Step(kind, prefill, decode, batch, cost, newly, retracted)

    def _forward_batch(self, prefill: list[PrefillEntry], decode: list[SimRequest]) -> ForwardBatch:
        if self.cfg.kv_transferred:
            prefill = []  # their KV came over the wire: nothing to compute
        padded, graph = 0, False
        if decode and not prefill and self.cfg.cuda_graph_batch_sizes:
            size = padded_graph_batch_size(len(decode), list(self.cfg.cuda_graph_batch_sizes))
            if size is not None:
                padded, graph = size, True
        pairs = sum(e.extend_tokens * e.start + e.extend_tokens * (e.extend_tokens + 1) / 2 for e in prefill)
        return ForwardBatch(
            decode_seqs=len(decode),
            query_tokens_per_decode_seq=self.tokens_per_decode_seq,
            decode_context_tokens=sum(r.seq_len for r in decode),
            graph_padded_seqs=padded,
            prefill_tokens=sum(e.extend_tokens for e in prefill),
            prefill_seqs=len(prefill),
            prefill_attention_pairs=pairs,
            cuda_graph=graph,
        )

    # ---- completion -----------------------------------------------------------------------------
    def complete(self, step: Step) -> StepResult:
        emitted: list[tuple[SimRequest, list[int]]] = []
        finished: list[SimRequest] = []
        decode_tokens = 0
        # decode first: requests finishing their prefill in this step join the next decode
        for req in step.decode:
            if req.state != "running":
                continue  # aborted meanwhile
            ids = self._decode_one(req)
            decode_tokens += len(ids)
            emitted.append((req, ids))
            if req.remaining_new_tokens <= 0:
                finished.append(self._finish(req))
        for entry in step.prefill:
            req = entry.req
            if req.state != "prefilling":
                continue
            req.computed_len = entry.start + entry.extend_tokens
            self._cache_progress(req, req.computed_len)
            if not entry.completes:
                continue
            if self.chunked is req:
                self.chunked = None
            req.state = "running"
            self.running.append(req)
            ids = req.generator.take(1) if req.remaining_new_tokens > 0 else []
            req.output_ids.extend(ids)
            emitted.append((req, ids))
            if self.speculator:
                self.speculator.on_start(req)
            if req.remaining_new_tokens <= 0:
                finished.append(self._finish(req))
        stats = None
        if step.prefill:
            stats = self._stats(step, decode_refresh=False)
        if step.decode:
            self._decode_steps += 1
            self._interval_decode_tokens += decode_tokens
            self.new_token_ratio = max(
                self._min_ratio,
                self.new_token_ratio - (self._init_ratio - self._min_ratio) / RATIO_DECAY_STEPS,
            )
            if stats is None and self._decode_steps % max(1, self.cfg.decode_log_interval) == 0:
                stats = self._stats(step, decode_refresh=True)
        return StepResult(
            emitted,
            finished,
            stats,
            step.batch.cuda_graph,
            step.kind,
            step.batch.prefill_tokens,
            decode_tokens,
        )

    def _decode_one(self, req: SimRequest) -> list[int]:
        n = 1
        if self.speculator:
            accepted = self.speculator.accepted_drafts(req, req.remaining_new_tokens - 1)
            n = min(accepted + 1, req.remaining_new_tokens)
            req.verify_ct += 1
            req.spec_tokens += n
            self.total_verify += 1
            self.total_spec_tokens += n
            self._interval_verify += 1
            self._interval_spec_tokens += n
        ids = req.generator.take(n)
        req.output_ids.extend(ids)
        if self.speculator:
            self.speculator.on_tokens(req, ids)
        target = self._pages(req.seq_len) - req.prefix_len  # give back rejected draft slots
        if req.own_tokens > target:
            self.pool.release(req.own_tokens - target)
            req.own_tokens = target
        return ids

    def _finish(self, req: SimRequest) -> SimRequest:
        if req in self.running:
            self.running.remove(req)
        self._release(req, keep_in_cache=True)
        req.state = "finished"
        if self.speculator:
            self.speculator.on_finish(req)
        return req

    def _stats(self, step: Step, decode_refresh: bool) -> SchedulerStats:
        hit_rate = 0.0
        if not decode_refresh:
            firsts = [e for e in step.prefill if e.req in step.newly_scheduled]
            total = sum(e.start + e.extend_tokens for e in firsts)
            hit_rate = sum(e.start for e in firsts) / total if total else 0.0
        accept_len = accept_rate = 0.0
        if self.speculator and self._interval_verify:
            accept_len = self._interval_spec_tokens / self._interval_verify
            accept_rate = (accept_len - 1.0) / max(1, self.cfg.speculative_num_draft_tokens - 1)
        decode_tokens = self._interval_decode_tokens
        if decode_refresh:
            self._interval_verify = self._interval_spec_tokens = 0
            self._interval_decode_tokens = 0
        used = self.used_tokens
        return SchedulerStats(
            num_running_reqs=len(self.running) + (self.chunked is not None),
            num_queue_reqs=len(self.waiting),
            num_used_tokens=used,
            max_total_num_tokens=self.cfg.max_total_num_tokens,
            token_usage=used / self.cfg.max_total_num_tokens if self.cfg.max_total_num_tokens else 0.0,
            cache_hit_rate=hit_rate,
            spec_accept_length=accept_len,
            spec_accept_rate=accept_rate,
            decode_tokens=decode_tokens,
        )

    def requests(self) -> Iterable[SimRequest]:
        yield from self.waiting
        yield from self.running
        if self.chunked is not None:
            yield self.chunked

"""Command line of the simulated server: SGLang's flag names and defaults (plus a few sim-only flags),
`--config` YAML files with SGLang's semantics, and SGLang's validation of speculative-decoding flags.

Two surfaces: `--sim-sglang 0.5.23` (default) is SGLang 0.5.23's own parser rebuilt from the bundled dump
(surface_parser.py): what it refuses exits 2 with argparse's message, as SGLang does. `--sim-sglang seed`
is the older spelling the seeds' command lines use (`--cuda-graph-max-bs`, the forks' SUFFIX flags).
Parsing and resolving only; memory-dependent defaults (KV pool, max running requests) are filled in
by server.py after the memory plan.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.runtime.engines.surface import bundled_surface, parser_dump
from tuner.runtime.sim.generation import load_recorded_responses
from tuner.runtime.sim.profiles import (
    GPU_PROFILES,
    MODEL_PROFILES,
    lookup_gpu,
    lookup_model,
    model_profile_for_path,
)
from tuner.runtime.sim.speculative import ALGORITHMS, EAGLE_FAMILY
from tuner.runtime.sim.surface_parser import add_surface_arguments
from tuner.suffix_decoding.traces import TraceError

DEFAULT_PORT = 30000
SPEC_DEFAULT_TRIPLE = (3, 1, 4)  # num_steps, eagle_topk, num_draft_tokens when none is given
SPEC_DEFAULT_MAX_RUNNING = 48
NGRAM_DEFAULT_DRAFT_TOKENS = 8
KV_DTYPE_BYTES = {"auto": 2.0, "bf16": 2.0, "bfloat16": 2.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0}
# 0.5.23's further KV types (block-scaled: one byte of scale per 32 or 16 values)
KV_DTYPE_BYTES_0523 = {**KV_DTYPE_BYTES, "mxfp8": 1.03125, "nvfp4": 0.5625, "fp4_mx_block16": 0.5625}
SGLANG_SURFACES = ("0.5.23", "seed")
DEFAULT_SGLANG_SURFACE = "0.5.23"
# the simulator's own flags that the tuner's SimEngine sets (so not in the surface users' flags are checked
# against); --sim-model-profile and --startup-seconds stay user flags
SIM_ONLY_FLAGS = frozenset({"gpu", "seed", "time-scale", "sim-sglang", "dump-flag-surface"})
SCHEDULE_POLICIES = ("fcfs", "lpm", "random", "dfs-weight", "lof")


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_LABELS = (
    "model_name",
    "engine_type",
    "tp_rank",
    "pp_rank",
    "moe_ep_rank",
    "cache_source",
    "mode",
    "le",
)


class SimArgsError(ValueError):
    """Flags that parse but contradict each other (SGLang raises these at startup; exit 1)."""


@dataclass(frozen=True)
class SimServerArgs:
    """Fully resolved flags; /server_info shows these (plus memory-derived values) as JSON."""

    model_path: str
    tokenizer_path: str
    served_model_name: str
    host: str
    port: int
    tp_size: int
    context_length: int
    kv_cache_dtype: str
    chunked_prefill_size: int
    max_prefill_tokens: int
    max_running_requests: int | None  # None until the memory plan fixes it
    mem_fraction_static: float | None  # None until the memory plan fixes it
    schedule_policy: str
    schedule_conservativeness: float
    page_size: int
    cuda_graph_max_bs: int
    cuda_graph_bs: tuple[int, ...] | None
    disable_cuda_graph: bool
    disable_radix_cache: bool
    enable_mixed_chunk: bool
    speculative_algorithm: str | None
    speculative_draft_model_path: str | None
    speculative_num_steps: int | None
    speculative_eagle_topk: int | None
    speculative_num_draft_tokens: int | None
    speculative_suffix_cache_max_depth: int
    speculative_suffix_max_spec_factor: float
    speculative_suffix_max_spec_offset: float
    speculative_suffix_min_token_prob: float
    speculative_suffix_max_cached_requests: int
    enable_metrics: bool
    bucket_time_to_first_token: tuple[float, ...] | None
    bucket_inter_token_latency: tuple[float, ...] | None
    bucket_e2e_request_latency: tuple[float, ...] | None
    prompt_tokens_buckets: tuple[float, ...] | None  # None: SGLang's default edges
    generation_tokens_buckets: tuple[float, ...] | None
    extra_metric_labels: dict[str, str] | None
    decode_log_interval: int
    random_seed: int | None
    log_level: str
    attention_backend: str | None
    trust_remote_code: bool
    watchdog_timeout: float
    enable_cache_report: bool
    disable_overlap_schedule: bool
    # sim-only
    gpu: str
    sim_model_profile: str
    seed: int
    time_scale: float
    startup_seconds: float
    sim_response_trace: str | None = None
    spec_v2: bool = False
    # mechanisms the seeds measured (see cost.py): off/1/"null" is SGLang's default
    enable_torch_compile: bool = False
    torch_compile_max_bs: int = 32
    disable_shared_experts_fusion: bool = False
    ep_size: int = 1  # --ep-size: expert-parallel width of the MoE layers (MoE TP = tp_size / ep_size)
    attn_dp_size: int = 1  # data-parallel attention width (0.5.23 --attn-dp-size; seed era --enable-dp-attention)
    disaggregation_mode: str = "null"
    sim_sglang: str = DEFAULT_SGLANG_SURFACE  # the flag surface this run accepted
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("warnings")
        for key, value in list(data.items()):
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @property
    def kv_dtype_bytes(self) -> float:
        return KV_DTYPE_BYTES_0523[self.kv_cache_dtype]

    @property
    def tokens_per_graph_seq(self) -> int:
        return (self.speculative_num_draft_tokens or 1) if self.speculative_algorithm else 1


def _upper(value: str) -> str:
    return value.upper()


def build_parser(sglang: str = DEFAULT_SGLANG_SURFACE) -> argparse.ArgumentParser:
    """The simulator's parser for the SGLang surface `sglang` ('0.5.23' or 'seed')."""
    if sglang == "seed":
        return build_seed_parser()
    p = argparse.ArgumentParser(
        prog="python -m tuner.runtime.sim",
        usage="%(prog)s --model-path MODEL [--port PORT] [--enable-metrics] [SGLang 0.5.23 flags] [sim flags]",
        description="Simulated SGLang 0.5.23 server (no GPU): SGLang 0.5.23's flags (its parser, rebuilt from "
        "the bundled dump), HTTP API and metrics, with step times from a roofline model of a model profile "
        "on a GPU profile.",
    )
    add_surface_arguments(p, bundled_surface("sglang", "0.5.23"))
    _add_sim_only(p)
    return p


def build_seed_parser() -> argparse.ArgumentParser:
    """The seeds' SGLang spelling (before 0.5.23's renames), with the forks' SUFFIX speculation flags."""
    p = argparse.ArgumentParser(
        prog="python -m tuner.runtime.sim",
        usage="%(prog)s --model-path MODEL [--port PORT] [--enable-metrics] [SGLang flags] [sim flags]",
        description="Simulated SGLang server (no GPU): SGLang's flags, HTTP API and metrics, with step "
        "times from a roofline model of a model profile on a GPU profile.",
        allow_abbrev=False,
    )
    g = p.add_argument_group("model and server")
    g.add_argument(
        "--model-path",
        "--model",
        dest="model_path",
        required=True,
        help="model path or name; also selects the simulated model profile",
    )
    g.add_argument(
        "--tokenizer-path", help="accepted for compatibility (the simulator has its own tokenizer)"
    )
    g.add_argument(
        "--served-model-name", help="model name in the API and in metric labels (default: model path)"
    )
    g.add_argument("--host", default="127.0.0.1", help="HTTP host (default: 127.0.0.1)")
    g.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default: {DEFAULT_PORT})")
    g.add_argument("--config", help="YAML file of flags (keys with - or _; command line wins)")
    g.add_argument(
        "--tp-size", "--tp", dest="tp_size", type=int, default=1, help="tensor parallel size (default: 1)"
    )
    g.add_argument("--context-length", type=int, help="max prompt + output tokens (default: the model's)")
    g.add_argument(
        "--kv-cache-dtype",
        default="auto",
        choices=sorted(KV_DTYPE_BYTES),
        help="KV cache data type; fp8 halves KV bytes per token (default: auto = bf16)",
    )
    g.add_argument("--dtype", default="auto", help="accepted for compatibility; no effect")
    g.add_argument("--quantization", help="accepted for compatibility; no effect")
    g.add_argument("--trust-remote-code", action="store_true", help="accepted for compatibility; no effect")

    g = p.add_argument_group("memory and scheduling")
    g.add_argument(
        "--mem-fraction-static",
        type=float,
        help="fraction of GPU memory for weights + KV cache (default: derived from the CUDA graph "
        "and chunked prefill sizes)",
    )
    g.add_argument(
        "--max-running-requests",
        type=int,
        help="max requests decoding at once (default: from KV capacity; 48 with speculative decoding)",
    )
    g.add_argument(
        "--max-prefill-tokens", type=int, default=16384, help="token budget of one prefill batch (16384)"
    )
    g.add_argument(
        "--chunked-prefill-size",
        type=int,
        help="max tokens of one prefill chunk; -1 disables chunking (default: 8192 on 80-160 GB GPUs)",
    )
    g.add_argument("--enable-mixed-chunk", action="store_true", help="mix prefill chunks into decode batches")
    g.add_argument("--schedule-policy", default="fcfs", choices=SCHEDULE_POLICIES, help="queue order (fcfs)")
    g.add_argument(
        "--schedule-conservativeness",
        type=float,
        default=1.0,
        help="scales the KV reserved for running requests' future tokens (1.0)",
    )
    g.add_argument("--page-size", type=int, default=1, help="KV cache page size in tokens (1)")
    g.add_argument("--disable-radix-cache", action="store_true", help="disable the prefix cache")
    g.add_argument(
        "--cuda-graph-max-bs",
        type=int,
        help="largest decode batch run as a CUDA graph (default: 256 if tp < 4, else 512)",
    )
    g.add_argument(
        "--cuda-graph-bs", type=int, nargs="+", help="decode batch sizes to capture (overrides max bs)"
    )
    g.add_argument("--disable-cuda-graph", action="store_true", help="run every forward eagerly")
    g.add_argument(
        "--disable-overlap-schedule", action="store_true", help="accepted for compatibility; no effect"
    )
    g.add_argument("--attention-backend", help="accepted for compatibility; no effect")
    g.add_argument(
        "--watchdog-timeout", type=float, default=300.0, help="accepted for compatibility; no effect"
    )

    g = p.add_argument_group("speculative decoding")
    g.add_argument(
        "--speculative-algorithm",
        type=_upper,
        choices=ALGORITHMS,
        help="EAGLE, EAGLE3, NEXTN (alias of EAGLE), STANDALONE, NGRAM or SUFFIX",
    )
    g.add_argument(
        "--speculative-draft-model-path", help="accepted for compatibility (draft costs are modelled)"
    )
    g.add_argument(
        "--speculative-num-steps", type=int, help="draft steps (default 3 when none of the three is set)"
    )
    g.add_argument("--speculative-eagle-topk", type=int, help="draft branches per step (default 1)")
    g.add_argument(
        "--speculative-num-draft-tokens",
        type=int,
        help="tokens verified per sequence in one pass (default 4; required for SUFFIX)",
    )
    g.add_argument(
        "--speculative-suffix-cache-max-depth",
        type=int,
        default=64,
        help="suffix tree depth: bounds match length plus speculation length (64)",
    )
    g.add_argument(
        "--speculative-suffix-max-spec-factor",
        type=float,
        default=1.0,
        help="speculate at most factor x match length + offset tokens (1.0)",
    )
    g.add_argument(
        "--speculative-suffix-max-spec-offset", type=float, default=0.0, help="see the factor (0.0)"
    )
    g.add_argument(
        "--speculative-suffix-min-token-prob",
        type=float,
        default=0.1,
        help="stop drafting at tokens whose estimated probability is lower (0.1)",
    )
    g.add_argument(
        "--speculative-suffix-max-cached-requests",
        type=int,
        default=10000,
        help="previous outputs kept in the global suffix cache (10000)",
    )

    g = p.add_argument_group("metrics and logging")
    g.add_argument("--enable-metrics", action="store_true", help="serve Prometheus metrics on /metrics")
    g.add_argument("--bucket-time-to-first-token", type=float, nargs="+", help="TTFT histogram bucket edges")
    g.add_argument("--bucket-inter-token-latency", type=float, nargs="+", help="ITL histogram bucket edges")
    g.add_argument("--bucket-e2e-request-latency", type=float, nargs="+", help="E2E histogram bucket edges")
    g.add_argument("--prompt-tokens-buckets", nargs="+",
                   help="prompt-length histogram edges: 'default' or 'custom V1 V2 ...' (SGLang's rule syntax)")
    g.add_argument("--generation-tokens-buckets", nargs="+",
                   help="output-length histogram edges: 'default' or 'custom V1 V2 ...'")
    g.add_argument("--extra-metric-labels", help='JSON object of constant labels, e.g. \'{"trial": "42"}\'')
    g.add_argument(
        "--decode-log-interval", type=int, default=40, help="decode steps between gauge refreshes (40)"
    )
    g.add_argument("--enable-cache-report", action="store_true", help="accepted for compatibility; no effect")
    g.add_argument("--log-level", default="info", help="log level (info)")
    g.add_argument("--random-seed", type=int, help="seed (used when --seed is not given)")

    g = p.add_argument_group("mechanisms")
    g.add_argument("--enable-torch-compile", action="store_true", help="torch.compile small decode batches")
    g.add_argument("--torch-compile-max-bs", type=int, default=32, help="largest compiled batch (32)")
    g.add_argument("--disable-shared-experts-fusion", action="store_true",
                   help="run the shared experts apart from the routed ones")
    g.add_argument("--enable-dp-attention", action="store_true", help="data-parallel attention over --dp-size")
    g.add_argument("--dp-size", type=int, default=1, help="data parallel size (1)")
    g.add_argument("--disaggregation-mode", default="null", choices=("null", "prefill", "decode"),
                   help="serve only prefill or only decode (PD disaggregation)")
    _add_sim_only(p)
    return p


def _add_sim_only(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("simulator only")
    g.add_argument("--sim-sglang", default=DEFAULT_SGLANG_SURFACE, choices=SGLANG_SURFACES,
                   help="the SGLang flag surface to accept: 0.5.23 (default) or seed (the seeds' older "
                   "spelling, with the forks' SUFFIX flags)")
    g.add_argument("--dump-flag-surface", action="store_true",
                   help="print the accepted SGLang flags as JSON (the tuner's FlagSurface) and exit")
    g.add_argument(
        "--gpu", type=_upper, default="H200", choices=sorted(GPU_PROFILES), help="GPU profile (default: H200)"
    )
    g.add_argument(
        "--sim-model-profile",
        help=f"model profile: {', '.join(MODEL_PROFILES)} (default: derived from --model-path)",
    )
    g.add_argument("--seed", type=int, help="seed of generated tokens and acceptance (default: 0)")
    g.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run N times faster than real time; clients and metrics see the faster wall clock (1.0)",
    )
    g.add_argument(
        "--startup-seconds",
        type=float,
        default=20.0,
        help="simulated weight loading time before CUDA graph capture, in real seconds (20)",
    )
    g.add_argument(
        "--sim-response-trace",
        metavar="FILE.jsonl",
        help="answer prompts recorded in this trace (tuner suffix-replay's tokens format) with their recorded "
        "responses, so a trace served live meets the responses its offline replay sees",
    )


def _config_to_argv(path: str, parser: argparse.ArgumentParser) -> list[str]:
    file = Path(path)
    if not file.is_file():
        parser.error(f"--config file not found: {path}")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        parser.error(f"--config {path} is not valid YAML: {exc}")
    if not isinstance(data, Mapping):
        parser.error(f"--config {path} must hold a mapping of flag names to values")
    argv: list[str] = []
    for key, value in data.items():
        flag = "--" + str(key).replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv.append(flag)
            argv.extend(str(v) for v in value)
        elif isinstance(value, Mapping):
            argv.extend([flag, json.dumps(value)])
        else:
            argv.extend([flag, str(value)])
    return argv


def parse_cli(argv: Sequence[str]) -> argparse.Namespace:
    """argv (config file expanded in front, so the command line wins) -> Namespace; exits 2 on errors, as
    SGLang does. `--dump-flag-surface` prints the surface as JSON and exits 0."""
    argv = list(argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    pre.add_argument("--sim-sglang", default=DEFAULT_SGLANG_SURFACE)
    pre.add_argument("--dump-flag-surface", action="store_true")
    known, _ = pre.parse_known_args(argv)
    parser = build_parser(known.sim_sglang if known.sim_sglang in SGLANG_SURFACES else DEFAULT_SGLANG_SURFACE)
    if known.dump_flag_surface:
        dump = parser_dump(parser, known.sim_sglang)
        dump["flags"] = {k: v for k, v in dump["flags"].items()
                         if v["primary"][2:] not in SIM_ONLY_FLAGS and k not in ("--config",)}
        print(json.dumps(dump))
        raise SystemExit(0)
    if known.config:
        rest: list[str] = []
        skip = False
        for token in argv:
            if skip:
                skip = False
                continue
            if token == "--config":
                skip = True
                continue
            if token.startswith("--config="):
                continue
            rest.append(token)
        argv = _config_to_argv(known.config, parser) + rest
    ns = parser.parse_args(argv)
    if not ns.model_path:
        parser.error("the following arguments are required: --model-path")
    if ns.sim_model_profile is not None and lookup_model(ns.sim_model_profile) is None:
        parser.error(
            f"unknown --sim-model-profile {ns.sim_model_profile!r}; profiles: {', '.join(MODEL_PROFILES)}"
        )
    if ns.sim_model_profile is None and model_profile_for_path(ns.model_path) is None:
        parser.error(
            f"cannot derive a simulated model profile from --model-path {ns.model_path!r}; pass "
            f"--sim-model-profile with one of: {', '.join(MODEL_PROFILES)}"
        )
    return _common_namespace(ns)


# 0.5.23 ships these speculative algorithms (SUFFIX is a fork's); the simulator models the ones it knows.
SGLANG_0523_ALGORITHMS = ("EAGLE", "EAGLE3", "NEXTN", "STANDALONE", "NGRAM")
SUFFIX_DEFAULTS = {"speculative_suffix_cache_max_depth": 64, "speculative_suffix_max_spec_factor": 1.0,
                   "speculative_suffix_max_spec_offset": 0.0, "speculative_suffix_min_token_prob": 0.1,
                   "speculative_suffix_max_cached_requests": 10000}


def _common_namespace(ns: argparse.Namespace) -> argparse.Namespace:
    """A 0.5.23 Namespace in the names resolve_args reads (the seed parser's): the decode CUDA graph flags
    stand for the graph settings, the deprecated aliases folded into their current form."""
    if ns.sim_sglang == "seed":
        ns.attn_dp_size = ns.dp_size if ns.enable_dp_attention else 1
        ns.kv_bytes_table = KV_DTYPE_BYTES
        return ns
    ns.cuda_graph_max_bs = ns.cuda_graph_max_bs_decode
    ns.cuda_graph_bs = ns.cuda_graph_bs_decode
    ns.disable_cuda_graph = bool(ns.disable_cuda_graph or ns.disable_decode_cuda_graph
                                 or ns.cuda_graph_backend_decode == "disabled")
    if ns.attn_dp_size == 1 and ns.enable_dp_attention:
        ns.attn_dp_size = ns.dp_size
    if ns.page_size is None:
        ns.page_size = 1
    if isinstance(ns.extra_metric_labels, (dict, list)):
        ns.extra_metric_labels = json.dumps(ns.extra_metric_labels)
    if ns.speculative_algorithm is not None:
        ns.speculative_algorithm = str(ns.speculative_algorithm).upper()
    for name, value in SUFFIX_DEFAULTS.items():
        setattr(ns, name, value)
    ns.kv_bytes_table = KV_DTYPE_BYTES_0523
    return ns


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _resolve_speculative(
    ns: argparse.Namespace, spec_v2: bool, warnings: list[str]
) -> tuple[int | None, int | None, int | None]:
    alg = ns.speculative_algorithm
    steps, topk, drafts = ns.speculative_num_steps, ns.speculative_eagle_topk, ns.speculative_num_draft_tokens
    if alg is None:
        return steps, topk, drafts
    if alg in EAGLE_FAMILY:
        given = [v is not None for v in (steps, topk, drafts)]
        if not any(given):
            steps, topk, drafts = SPEC_DEFAULT_TRIPLE
        elif not all(given):
            raise SimArgsError(
                "--speculative-num-steps, --speculative-eagle-topk and --speculative-num-draft-tokens "
                f"must be set together (got {steps}, {topk}, {drafts})"
            )
        assert steps is not None and topk is not None and drafts is not None
        if steps < 1 or topk < 1 or drafts < 1:
            raise SimArgsError("speculative steps, topk and draft tokens must be >= 1")
        if topk == 1 and drafts != steps + 1:
            warnings.append(
                f"speculative_num_draft_tokens is adjusted to speculative_num_steps + 1 = {steps + 1} "
                f"when speculative_eagle_topk == 1 (was {drafts})"
            )
            drafts = steps + 1
        if spec_v2 and topk != 1:
            raise SimArgsError(
                f"SGLANG_ENABLE_SPEC_V2=1 only supports --speculative-eagle-topk 1 (got {topk})"
            )
        return steps, topk, drafts
    if alg == "SUFFIX":
        if drafts is None:
            raise SimArgsError("--speculative-algorithm SUFFIX requires --speculative-num-draft-tokens")
    elif drafts is None:
        drafts = NGRAM_DEFAULT_DRAFT_TOKENS
    if drafts < 1:
        raise SimArgsError("--speculative-num-draft-tokens must be >= 1")
    return steps, topk if topk is not None else 1, drafts


def resolve_args(ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> SimServerArgs:
    """Namespace -> SimServerArgs with SGLang's defaults; raises SimArgsError on contradictions."""
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    gpu = lookup_gpu(ns.gpu)
    assert gpu is not None
    model = (
        lookup_model(ns.sim_model_profile) if ns.sim_model_profile else model_profile_for_path(ns.model_path)
    )
    assert model is not None
    spec_v2 = _env_flag(env, "SGLANG_ENABLE_SPEC_V2")
    surface = getattr(ns, "sim_sglang", "seed")
    alg = ns.speculative_algorithm
    if surface != "seed" and alg is not None and alg not in SGLANG_0523_ALGORITHMS:
        fork = " (SUFFIX exists only in SGLang forks; run the simulator with --sim-sglang seed)" \
            if alg == "SUFFIX" else ""
        raise SimArgsError(f"unknown --speculative-algorithm {alg!r}; SGLang 0.5.23 as simulated takes "
                           f"{', '.join(SGLANG_0523_ALGORITHMS)}{fork}")
    steps, topk, drafts = _resolve_speculative(ns, spec_v2, warnings)
    attn_dp_size = int(getattr(ns, "attn_dp_size", 1) or 1)
    if attn_dp_size < 1 or ns.tp_size % attn_dp_size:
        raise SimArgsError(f"--tp-size {ns.tp_size} must be divisible by the DP attention size {attn_dp_size}")

    if ns.tp_size < 1:
        raise SimArgsError("--tp-size must be >= 1")
    ep_size = int(getattr(ns, "ep_size", 1) or 1)
    split_error = model.moe_split_error(ns.tp_size, ep_size)
    if split_error:
        raise SimArgsError(split_error)
    if ns.page_size < 1:
        raise SimArgsError("--page-size must be >= 1")
    if ns.mem_fraction_static is not None and not 0.0 < ns.mem_fraction_static < 1.0:
        raise SimArgsError("--mem-fraction-static must be between 0 and 1")
    if ns.time_scale <= 0:
        raise SimArgsError("--time-scale must be > 0")
    if ns.startup_seconds < 0:
        raise SimArgsError("--startup-seconds must be >= 0")
    if ns.max_running_requests is not None and ns.max_running_requests < 1:
        raise SimArgsError("--max-running-requests must be >= 1")
    if ns.max_prefill_tokens < 1:
        raise SimArgsError("--max-prefill-tokens must be >= 1")

    big_gpu = gpu.memory_bytes > 160 * 1024**3
    chunked = ns.chunked_prefill_size if ns.chunked_prefill_size is not None else (16384 if big_gpu else 8192)
    if chunked != -1 and chunked < ns.page_size:
        raise SimArgsError("--chunked-prefill-size must be -1 or at least --page-size")
    if ns.cuda_graph_bs:
        if min(ns.cuda_graph_bs) < 1:
            raise SimArgsError("--cuda-graph-bs sizes must be >= 1")
        graph_max = max(ns.cuda_graph_bs)
    elif ns.cuda_graph_max_bs is not None:
        if ns.cuda_graph_max_bs < 1:
            raise SimArgsError("--cuda-graph-max-bs must be >= 1")
        graph_max = ns.cuda_graph_max_bs
    else:
        graph_max = 256 if ns.tp_size < 4 else 512

    max_running = ns.max_running_requests
    if max_running is None and ns.speculative_algorithm:
        max_running = SPEC_DEFAULT_MAX_RUNNING

    labels: dict[str, str] | None = None
    if ns.extra_metric_labels:
        try:
            parsed = json.loads(ns.extra_metric_labels)
        except json.JSONDecodeError as exc:
            raise SimArgsError(f"--extra-metric-labels is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise SimArgsError("--extra-metric-labels must be a JSON object")
        labels = {str(k): str(v) for k, v in parsed.items()}
        for key in labels:
            if not _LABEL_NAME.fullmatch(key) or key in RESERVED_LABELS:
                raise SimArgsError(f"--extra-metric-labels: {key!r} is not a usable Prometheus label name")
    for name in ("bucket_time_to_first_token", "bucket_inter_token_latency", "bucket_e2e_request_latency"):
        edges = getattr(ns, name)
        if edges is not None and list(edges) != sorted(set(edges)):
            raise SimArgsError(f"--{name.replace('_', '-')} must be strictly increasing")

    token_buckets = {name: _token_buckets(getattr(ns, name), name)
                     for name in ("prompt_tokens_buckets", "generation_tokens_buckets")}
    seed = ns.seed if ns.seed is not None else (ns.random_seed if ns.random_seed is not None else 0)
    return SimServerArgs(
        model_path=ns.model_path,
        tokenizer_path=ns.tokenizer_path or ns.model_path,
        served_model_name=ns.served_model_name or ns.model_path,
        host=ns.host,
        port=ns.port,
        tp_size=ns.tp_size,
        context_length=ns.context_length or model.max_position_embeddings,
        kv_cache_dtype=ns.kv_cache_dtype,
        chunked_prefill_size=chunked,
        max_prefill_tokens=ns.max_prefill_tokens,
        max_running_requests=max_running,
        mem_fraction_static=ns.mem_fraction_static,
        schedule_policy=ns.schedule_policy,
        schedule_conservativeness=ns.schedule_conservativeness,
        page_size=ns.page_size,
        cuda_graph_max_bs=graph_max,
        cuda_graph_bs=tuple(sorted(set(ns.cuda_graph_bs))) if ns.cuda_graph_bs else None,
        disable_cuda_graph=ns.disable_cuda_graph,
        disable_radix_cache=ns.disable_radix_cache,
        enable_mixed_chunk=ns.enable_mixed_chunk,
        speculative_algorithm=ns.speculative_algorithm,
        speculative_draft_model_path=ns.speculative_draft_model_path,
        speculative_num_steps=steps,
        speculative_eagle_topk=topk,
        speculative_num_draft_tokens=drafts,
        speculative_suffix_cache_max_depth=ns.speculative_suffix_cache_max_depth,
        speculative_suffix_max_spec_factor=ns.speculative_suffix_max_spec_factor,
        speculative_suffix_max_spec_offset=ns.speculative_suffix_max_spec_offset,
        speculative_suffix_min_token_prob=ns.speculative_suffix_min_token_prob,
        speculative_suffix_max_cached_requests=ns.speculative_suffix_max_cached_requests,
        enable_metrics=ns.enable_metrics,
        bucket_time_to_first_token=tuple(ns.bucket_time_to_first_token)
        if ns.bucket_time_to_first_token
        else None,
        bucket_inter_token_latency=tuple(ns.bucket_inter_token_latency)
        if ns.bucket_inter_token_latency
        else None,
        bucket_e2e_request_latency=tuple(ns.bucket_e2e_request_latency)
        if ns.bucket_e2e_request_latency
        else None,
        prompt_tokens_buckets=token_buckets["prompt_tokens_buckets"],
        generation_tokens_buckets=token_buckets["generation_tokens_buckets"],
        extra_metric_labels=labels,
        decode_log_interval=ns.decode_log_interval,
        random_seed=ns.random_seed,
        log_level=ns.log_level,
        attention_backend=ns.attention_backend,
        trust_remote_code=ns.trust_remote_code,
        watchdog_timeout=ns.watchdog_timeout,
        enable_cache_report=ns.enable_cache_report,
        disable_overlap_schedule=ns.disable_overlap_schedule,
        gpu=gpu.name,
        sim_model_profile=model.name,
        seed=seed,
        time_scale=ns.time_scale,
        startup_seconds=ns.startup_seconds,
        sim_response_trace=_response_trace(ns.sim_response_trace),
        spec_v2=spec_v2,
        enable_torch_compile=bool(ns.enable_torch_compile),
        torch_compile_max_bs=int(ns.torch_compile_max_bs),
        disable_shared_experts_fusion=bool(ns.disable_shared_experts_fusion),
        attn_dp_size=attn_dp_size,
        ep_size=ep_size,
        disaggregation_mode=str(ns.disaggregation_mode),
        sim_sglang=surface,
        warnings=tuple(warnings),
    )


def _response_trace(path: str | None) -> str | None:
    """The --sim-response-trace file, read once here so a bad one stops the start with its line named."""
    if path is None:
        return None
    try:
        load_recorded_responses(path)
    except TraceError as exc:
        raise SimArgsError(f"--sim-response-trace: {exc}") from None
    return path


def _token_buckets(rule: list[str] | None, name: str) -> tuple[float, ...] | None:
    """SGLang's bucket rule for the token-length histograms: `default` or `custom V1 V2 ...` (the `tse`
    rule of SGLang is not simulated)."""
    if not rule or rule == ["default"]:
        return None
    flag = f"--{name.replace('_', '-')}"
    if rule[0] != "custom" or len(rule) < 2:
        raise SimArgsError(f"{flag}: use 'default' or 'custom V1 V2 ...', got {' '.join(rule)!r}")
    try:
        edges = [float(v) for v in rule[1:]]
    except ValueError:
        raise SimArgsError(f"{flag}: bucket edges must be numbers, got {' '.join(rule[1:])!r}") from None
    if edges != sorted(set(edges)):
        raise SimArgsError(f"{flag} must be strictly increasing")
    return tuple(edges)

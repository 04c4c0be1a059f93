"""Whose fused-MoE kernel is timed: the engine's own entry point (the truth), or ours (the CI path and proxy).

The JSON files are read by the engine's kernel, so that kernel is timed whenever the engine is importable:
`get_backend("auto")` finds SGLang's (then vLLM's) `fused_experts` across their layouts and calls it the way
that version wants. Where the engine reads separate `_down` configs (SGLang 0.5.x), candidates reach its
kernel through its own file lookup (`engine_lookup.ConfigFolder`), since `override_config` cannot carry a
down config; elsewhere through `override_config`. When no engine is importable, ours is timed as a *proxy*
and says so (`proxy_for`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from tuner.errors import TunerError
from tuner.kernels.base import KernelConfig, MoeConfigs, MoeShape, Quant
from tuner.kernels.fused_moe.engine_lookup import CONFIG_DIR_ENV, ConfigFolder, locate_config_file
from tuner.kernels.fused_moe.kernel import MoeWeights, fused_moe

log = logging.getLogger(__name__)

ENGINES = ("sglang", "vllm")


@dataclass(frozen=True)
class EngineChoice:
    """What an engine runs at one batch size before any tuning: its shipped file (through its own lookup) or
    its built-in default. `source` says which, e.g. 'triton_3_5_1/E=257,...json + _down' or 'default'."""

    configs: MoeConfigs
    source: str


@dataclass(frozen=True)
class ConfigRoot:
    """A folder where an engine keeps config files: `layout` 'sglang' (configs/triton_x_y_z/) or 'vllm' (flat)."""

    path: Path
    layout: str


class MoeKernelBackend(Protocol):
    @property
    def name(self) -> str: ...  # "tuner" | "sglang" | "vllm": stored with every measurement
    @property
    def version(self) -> str: ...
    @property
    def supports_down_config(self) -> bool: ...  # reads a separate down-GEMM config (`_down` files)
    @property
    def supports_tma(self) -> bool: ...  # honours USE_TMA in a down config

    def run(
        self, x: torch.Tensor, weights: MoeWeights, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
        shape: MoeShape, configs: MoeConfigs,
    ) -> torch.Tensor: ...

    def engine_choice(self, shape: MoeShape, batch_size: int) -> EngineChoice: ...

    def config_roots(self) -> list[ConfigRoot]: ...


def sglang_default_config(shape: MoeShape, batch_size: int) -> KernelConfig:
    """SGLang 0.5.23's `get_default_config` on an sm90 GPU (kernels.md): the baseline with no file."""
    from tuner.kernels.fused_moe.space import default_config

    return default_config(shape, batch_size)


@dataclass(frozen=True)
class TunerBackend:
    """Our Triton kernel. `proxy_for` names the engine whose files are being tuned when it is not importable."""

    name: str = "tuner"
    version: str = "tuner-fused-moe-v1"
    supports_down_config: bool = True
    supports_tma: bool = False
    proxy_for: str | None = None

    def run(self, x, weights, topk_weights, topk_ids, shape, configs):  # type: ignore[no-untyped-def]
        return fused_moe(x, weights, topk_weights, topk_ids, shape, configs.up, configs.down)

    def engine_choice(self, shape: MoeShape, batch_size: int) -> EngineChoice:
        return EngineChoice(MoeConfigs(sglang_default_config(shape, batch_size)), "default (SGLang's, engine not importable)")

    def config_roots(self) -> list[ConfigRoot]:
        return []


# ------------------------------------------------------------------------------------------------ engine layouts


@dataclass(frozen=True)
class EngineLayout:
    """Where one range of an engine's releases keeps its Triton fused-MoE pieces."""

    engine: str
    releases: str  # for messages, e.g. "SGLang 0.5.2x"
    entry_module: str  # holds fused_experts
    override_module: str  # holds override_config
    config_module: str  # holds get_moe_configs / try_get_optimal_moe_config / get_config_file_name


# Newest first. Facts: SGLang 0.5.23 from its wheel (kernels.md); the older SGLang and vLLM layouts from their
# public source trees (0.4.x kept everything in fused_moe.py; vLLM 0.11-0.33 keeps the lookup in fused_moe.py).
LAYOUTS: tuple[EngineLayout, ...] = (
    EngineLayout("sglang", "SGLang 0.5.2x", "sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe",
                 "sglang.srt.layers.moe.moe_runner.triton_utils",
                 "sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config"),
    EngineLayout("sglang", "SGLang 0.4.10-0.5.1x", "sglang.srt.layers.moe.fused_moe_triton.fused_moe",
                 "sglang.srt.layers.moe.fused_moe_triton",
                 "sglang.srt.layers.moe.fused_moe_triton.fused_moe_triton_config"),
    EngineLayout("sglang", "SGLang 0.4.x", "sglang.srt.layers.moe.fused_moe_triton.fused_moe",
                 "sglang.srt.layers.moe.fused_moe_triton", "sglang.srt.layers.moe.fused_moe_triton.fused_moe"),
    EngineLayout("sglang", "SGLang <= 0.4.3", "sglang.srt.layers.fused_moe_triton.fused_moe",
                 "sglang.srt.layers.fused_moe_triton", "sglang.srt.layers.fused_moe_triton.fused_moe"),
    EngineLayout("vllm", "vLLM 0.11-0.33", "vllm.model_executor.layers.fused_moe.fused_moe",
                 "vllm.model_executor.layers.fused_moe", "vllm.model_executor.layers.fused_moe.fused_moe"),
)

# The argument objects the newer entry points take instead of flat keyword arguments, where each engine keeps them.
SGLANG_RUNNER_CONFIG = ("sglang.srt.layers.moe.moe_runner", "MoeRunnerConfig")
SGLANG_TOPK_OUTPUT = ("sglang.srt.layers.moe.topk", "StandardTopKOutput")
VLLM_FP8_QUANT_CONFIG = ("vllm.model_executor.layers.fused_moe.config", "fp8_w8a8_moe_quant_config")

# How an entry point wants to be called, read from its signature (the engines changed it in 2025):
#   "flat":        fused_experts(x, w1, w2, topk_weights, topk_ids, use_fp8_w8a8=..., w1_scale=..., ...)
#   "topk_output": SGLang >= 0.5: fused_experts(x, w1, w2, topk_output, moe_runner_config, use_fp8_w8a8=..., ...)
#   "quant_config": vLLM >= 0.11: fused_experts(x, w1, w2, topk_weights, topk_ids, quant_config=...)
CALL_STYLES = ("flat", "topk_output", "quant_config")


def call_style(fn: Callable[..., Any]) -> str:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "flat"
    if "topk_output" in params:
        return "topk_output"
    if "quant_config" in params and "use_fp8_w8a8" not in params:
        return "quant_config"
    return "flat"


def _params(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _optional_attr(module_name: str, attr: str) -> Any:
    try:
        return getattr(importlib.import_module(module_name), attr, None)
    except ImportError:
        return None


def _accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `fn` (or a dataclass) takes; others are dropped (fields differ between versions)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _dtype_str(shape: MoeShape) -> str | None:
    """The engines' config dtype string: 'fp8_w8a8' for FP8 w8a8, None for bf16/fp16 (SGLang and vLLM alike)."""
    return "fp8_w8a8" if shape.quant.is_fp8 else None


def _config_from_engine(entry: dict[str, Any], shape: MoeShape) -> KernelConfig:
    """An engine's config dict as a KernelConfig; bf16 defaults carry no warps/stages (Triton's 4 and 3 apply)."""
    return KernelConfig.from_json_dict({"num_warps": 4, "num_stages": 3, **entry})


@dataclass
class EngineBackend:
    """The engine's own `fused_experts`, called with our weights under the configs being measured."""

    name: str
    version: str
    layout: EngineLayout
    fused_experts: Callable[..., torch.Tensor]
    override_config: Callable[[dict[str, Any]], contextlib.AbstractContextManager[Any]]
    style: str = "flat"
    runner_config: Callable[..., Any] | None = None  # SGLang's MoeRunnerConfig
    topk_output: Callable[..., Any] | None = None  # SGLang's StandardTopKOutput
    quant_config: Callable[..., Any] | None = None  # vLLM's fp8_w8a8_moe_quant_config
    lookup: Callable[..., Any] | None = None  # try_get_optimal_moe_config
    file_name: Callable[..., str] | None = None  # get_config_file_name
    get_moe_configs: Any = None  # lru-cached get_moe_configs
    module_dir: Path | None = None  # where the engine's shipped configs/ folder is
    folder: ConfigFolder | None = None  # set when candidates go through the engine's file lookup
    supports_tma: bool = False
    _shape_for_folder: MoeShape | None = field(default=None, repr=False)

    @property
    def supports_down_config(self) -> bool:
        return self.folder is not None

    # ---------------------------------------------------------------- calling the kernel

    def _fp8_kwargs(self, weights: MoeWeights, shape: MoeShape) -> dict[str, Any]:
        if not shape.quant.is_fp8:
            return {}
        kwargs: dict[str, Any] = {"use_fp8_w8a8": True, "w1_scale": weights.w1_scale, "w2_scale": weights.w2_scale}
        if shape.quant is Quant.FP8_PER_CHANNEL:
            # Per-channel weights with per-token dynamic activation scales: the scales the model really uses.
            kwargs["per_channel_quant"] = True
        if shape.quant is Quant.FP8_BLOCK:
            kwargs["block_shape"] = list(shape.block_shape or ())
        return kwargs

    def _call(self, x, weights, topk_weights, topk_ids, shape):  # type: ignore[no-untyped-def]
        fp8 = self._fp8_kwargs(weights, shape)
        if self.style == "topk_output":
            topk = (self.topk_output or _triple)(topk_weights, topk_ids, None)
            assert self.runner_config is not None  # required at load time for this style
            runner = self.runner_config(**_accepted(self.runner_config, {
                "num_experts": shape.num_experts, "num_local_experts": shape.num_experts,
                "hidden_size": shape.hidden_size, "intermediate_size_per_partition": shape.intermediate_size,
                "top_k": shape.runtime_top_k, "num_fused_shared_experts": shape.fused_shared_experts,
                "params_dtype": x.dtype, "activation": "silu",
                "inplace": False,  # the timed inputs are reused by every replay: never overwrite them
            }))
            return self.fused_experts(x, weights.w1, weights.w2, topk, runner, **fp8)
        if self.style == "quant_config":
            quant = None
            if fp8:
                assert self.quant_config is not None  # required at load time for this style
                per_channel = bool(fp8.get("per_channel_quant"))
                quant = self.quant_config(**_accepted(self.quant_config, {
                    "w1_scale": fp8["w1_scale"], "w2_scale": fp8["w2_scale"], "per_act_token_quant": per_channel,
                    "per_out_ch_quant": per_channel, "block_shape": fp8.get("block_shape"),
                }))
            return self.fused_experts(x, weights.w1, weights.w2, topk_weights, topk_ids, quant_config=quant)
        return self.fused_experts(x, weights.w1, weights.w2, topk_weights, topk_ids, **fp8)

    def run(self, x, weights, topk_weights, topk_ids, shape, configs):  # type: ignore[no-untyped-def]
        if configs.down is not None and self.folder is None:
            raise ValueError(f"{self.version} reads no separate down config; got {configs.key}")
        if (configs.up.use_tma or configs.effective_down.use_tma) and not (self.supports_tma and self.folder):
            raise ValueError(f"{self.version} has no USE_TMA path here; got {configs.key}")
        if self.folder is not None:
            self._bind_folder(shape)
            with self.folder.serving(configs, x.shape[0]):
                return self._call(x, weights, topk_weights, topk_ids, shape)
        with self.override_config(configs.up.to_json_dict()):
            return self._call(x, weights, topk_weights, topk_ids, shape)

    def _bind_folder(self, shape: MoeShape) -> None:
        assert self.folder is not None
        if self._shape_for_folder != shape:
            self.folder.forget(lambda down: self._engine_file_name(shape, down))
            self._shape_for_folder = shape

    # ---------------------------------------------------------------- the engine's own lookup

    def _engine_file_name(self, shape: MoeShape, down: bool) -> str:
        assert self.file_name is not None
        bn, bk = shape.block_shape or (0, 0)
        return self.file_name(*(shape.num_experts, shape.intermediate_size, _dtype_str(shape), [bn, bk]),
                              **_accepted(self.file_name, {"per_channel_quant": shape.quant is Quant.FP8_PER_CHANNEL,
                                                           "down_moe": down}))

    def engine_choice(self, shape: MoeShape, batch_size: int) -> EngineChoice:
        """The configs this engine runs at `batch_size` today: its own `try_get_optimal_moe_config` under the
        user's environment (SGLANG_MOE_CONFIG_DIR or the shipped files, with the Triton-folder fallback)."""
        if self.lookup is None:
            return EngineChoice(MoeConfigs(sglang_default_config(shape, batch_size)), "default")
        e, n, k = shape.num_experts, shape.intermediate_size, shape.hidden_size
        kwargs = {"block_shape": list(shape.block_shape) if shape.block_shape else None,
                  "per_channel_quant": shape.quant is Quant.FP8_PER_CHANNEL, "return_down_config": True}
        kwargs = _accepted(self.lookup, kwargs)
        ctx = self.folder.users_lookup() if self.folder is not None else contextlib.nullcontext()
        with ctx:
            if self.folder is None and hasattr(self.get_moe_configs, "cache_clear"):
                self.get_moe_configs.cache_clear()  # a user's file changed since the last lookup is read again
            got = self.lookup((e, 2 * n, k), (e, k, n), shape.runtime_top_k, _dtype_str(shape), batch_size, **kwargs)
        up_dict, down_dict = (got[0], got[1][0]) if kwargs.get("return_down_config") else (got, None)
        up = _config_from_engine(dict(up_dict), shape)
        down = None
        if down_dict is not None:
            down = _config_from_engine(dict(down_dict), shape).with_block_m(up.block_size_m)
            if down == up:
                down = None
        return EngineChoice(MoeConfigs(up, down), self._source(shape))

    def _source(self, shape: MoeShape) -> str:
        """Which file the engine's lookup reads for this shape (mirrors SGLang 0.5.23's search order), or 'default'."""
        if self.file_name is None or self.module_dir is None:
            return "default"
        import triton

        config_dir = os.environ.get(CONFIG_DIR_ENV, str(self.module_dir)) if self.name == "sglang" else str(self.module_dir)
        try:
            up = locate_config_file(config_dir, self._engine_file_name(shape, False), triton.__version__)
            down = (locate_config_file(config_dir, self._engine_file_name(shape, True), triton.__version__)
                    if self.folder is not None else None)
        except Exception:  # noqa: BLE001 - only a label for the report
            return "engine lookup"
        if up is None:
            return "default"
        label = f"{up.parent.name}/{up.name}"
        return label + (f" + {down.parent.name}/_down" if down is not None else "")

    def config_roots(self) -> list[ConfigRoot]:
        roots = []
        if self.name == "sglang":
            if os.environ.get(CONFIG_DIR_ENV):
                roots.append(ConfigRoot(Path(os.environ[CONFIG_DIR_ENV]), "sglang"))
            if self.module_dir is not None:
                roots.append(ConfigRoot(self.module_dir, "sglang"))
        else:
            if os.environ.get("VLLM_TUNED_CONFIG_FOLDER"):
                roots.append(ConfigRoot(Path(os.environ["VLLM_TUNED_CONFIG_FOLDER"]), "vllm"))
            if self.module_dir is not None:
                roots.append(ConfigRoot(self.module_dir / "configs", "vllm"))
        return roots


def _triple(topk_weights: torch.Tensor, topk_ids: torch.Tensor, router_logits: None) -> tuple:
    return (topk_weights, topk_ids, router_logits)


def _engine_version(engine: str) -> str:
    try:
        return str(importlib.import_module(engine).__version__)
    except (ImportError, AttributeError):
        return "unknown"


def _load_layout(layout: EngineLayout) -> EngineBackend | None:
    try:
        module = importlib.import_module(layout.entry_module)
        override_mod = importlib.import_module(layout.override_module)
    except ImportError:
        return None
    fn = getattr(module, "fused_experts", None)
    override = getattr(override_mod, "override_config", None) or getattr(module, "override_config", None)
    if fn is None or override is None:
        return None
    try:
        config_mod = importlib.import_module(layout.config_module)
    except ImportError:
        return None  # the lookup lives elsewhere in this release: another layout
    lookup = getattr(config_mod, "try_get_optimal_moe_config", None)
    get_moe_configs = getattr(config_mod, "get_moe_configs", None)
    file_name = getattr(config_mod, "get_config_file_name", None)
    if lookup is None or file_name is None:  # a layout that keeps the lookup elsewhere: not this layout
        return None
    engine = layout.engine
    version = f"{engine} {_engine_version(engine)}"
    style = call_style(fn)
    extras: dict[str, Any] = {}
    if style == "topk_output":
        extras = {"runner_config": _optional_attr(*SGLANG_RUNNER_CONFIG),
                  "topk_output": _optional_attr(*SGLANG_TOPK_OUTPUT)}
    elif style == "quant_config":
        extras = {"quant_config": _optional_attr(*VLLM_FP8_QUANT_CONFIG)}
    needed = {"topk_output": ("runner_config", SGLANG_RUNNER_CONFIG),
              "quant_config": ("quant_config", VLLM_FP8_QUANT_CONFIG)}.get(style)
    if needed is not None and extras[needed[0]] is None:
        log.warning("%s (%s layout): %s.fused_experts takes %s but %s.%s is not importable; not using this kernel",
                    version, layout.releases, layout.entry_module, style, *needed[1])
        return None
    module_file = getattr(config_mod, "__file__", None)
    backend = EngineBackend(
        name=engine, version=version, layout=layout, fused_experts=fn, override_config=override, style=style,
        lookup=lookup, file_name=file_name, get_moe_configs=get_moe_configs,
        module_dir=Path(os.path.realpath(module_file)).parent if module_file else None, **extras,
    )
    # A separate down config reaches the kernel only through SGLang's own file lookup (get_moe_configs with
    # down_moe, reading SGLANG_MOE_CONFIG_DIR on each uncached call), and only if that really works here.
    if (engine == "sglang" and get_moe_configs is not None and "down_moe" in _params(get_moe_configs)
            and "return_down_config" in _params(lookup) and hasattr(get_moe_configs, "cache_clear")):
        import triton

        # Its lookup logs every (re)read of our private files; those lines say nothing to the user.
        logging.getLogger(config_mod.__name__).setLevel(logging.ERROR)
        folder = ConfigFolder(triton.__version__, lambda down: "", get_moe_configs.cache_clear)
        if _file_lookup_works(backend, folder):
            backend.folder = folder
            backend.supports_tma = _supports_tma(module)
            atexit.register(folder.close)
        else:
            folder.close()
            log.warning("%s: its config lookup did not read a private %s; tuning one config for both GEMMs",
                        version, CONFIG_DIR_ENV)
    return backend


def _file_lookup_works(backend: EngineBackend, folder: ConfigFolder) -> bool:
    """Write a sentinel config into `folder` and check the engine's own get_moe_configs returns it."""
    probe = MoeShape(num_experts=3, intermediate_size=96, hidden_size=128, top_k=1)
    sentinel = MoeConfigs(KernelConfig(16, 32, 64, 1, 4, 2), KernelConfig(16, 64, 64, 1, 4, 2))
    backend.folder = folder
    try:
        backend._bind_folder(probe)
        with folder.serving(sentinel, 7):
            up = backend.get_moe_configs(3, 96, None, 0, 0, per_channel_quant=False, down_moe=False)
            down = backend.get_moe_configs(3, 96, None, 0, 0, per_channel_quant=False, down_moe=True)
        return bool(up and down and up.get(7) == sentinel.up.to_json_dict()
                    and down.get(7) == sentinel.effective_down.to_json_dict())
    except Exception as exc:  # noqa: BLE001 - any failure means: do not rely on it
        log.debug("file lookup probe failed: %s", exc)
        return False
    finally:
        backend.folder = None
        backend._shape_for_folder = None
        folder.forget()  # the engine's next lookup reads the user's own files again


def _supports_tma(module: Any) -> bool:
    """SGLang 0.5.23 honours USE_TMA when Triton has tensor descriptors (`_moe_support_tma`); older ones ignore it."""
    probe = getattr(module, "_moe_support_tma", None)
    if probe is None:
        return False
    try:
        return bool(probe())
    except Exception:  # noqa: BLE001
        return False


def load_engine_backend(engine: str) -> EngineBackend | None:
    """The newest layout of `engine` that imports here, or None."""
    for layout in LAYOUTS:
        if layout.engine == engine:
            backend = _load_layout(layout)
            if backend is not None:
                return backend
    return None


def available_backends() -> list[str]:
    names = [e for e in ENGINES if load_engine_backend(e) is not None]
    return names + ["tuner"]


def get_backend(name: str | None, target_engine: str = "sglang") -> MoeKernelBackend:
    """`None`/'auto': `target_engine`'s own kernel when importable, then the other engine's, else ours as a proxy
    (`proxy_for` set). 'tuner' forces ours; 'sglang'/'vllm' require that engine (TunerError otherwise)."""
    if name in (None, "auto"):
        order = [target_engine] + [e for e in ENGINES if e != target_engine]
        for engine in order:
            backend = load_engine_backend(engine)
            if backend is not None:
                return backend
        return TunerBackend(proxy_for=target_engine)
    if name == "tuner":
        return TunerBackend()
    if name not in ENGINES:
        raise TunerError(f"unknown --kernel-source {name!r}; choose one of: auto, tuner, {', '.join(ENGINES)}")
    backend = load_engine_backend(name)
    if backend is None:
        raise TunerError(
            f"--kernel-source {name}: the {name} package (or its fused-MoE entry point) is not importable here; "
            f"install {name} in this environment or use --kernel-source tuner"
        )
    return backend

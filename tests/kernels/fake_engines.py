"""Fake engine packages written to disk, laid out and called as each real release is (signatures as documented
in shared/reference/kernels.md and the SGLang 0.5.23 stand-in's stubs), with bodies that only record.

Each fake `fused_experts` resolves its configs through the fake's own lookup (`try_get_optimal_moe_config`),
which reads files the way SGLang 0.5.23 does (SGLANG_MOE_CONFIG_DIR or the module's folder, `configs/
triton_x_y_z/`, newest-other-folder fallback, `_down` twin reusing the up file when absent), so a test sees
exactly which up and down configs the engine would have launched.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

TRITON = "3.6.0"

_LOOKUP = '''
import functools, json, os
CALLS = []

def get_device_name():
    return "NVIDIA H200"

def get_config_file_name(E, N, dtype, block_shape=None, per_channel_quant=False, down_moe=False):
    device_name = get_device_name().replace(" ", "_")
    dtype_selector = "" if not dtype else f",dtype={dtype}"
    block_shape_selector = "" if not block_shape or not all(block_shape) else f",block_shape={block_shape}"
    per_channel_quant_selector = ",per_channel_quant=True" if per_channel_quant else ""
    down = "_down" if down_moe else ""
    return f"E={E},N={N},device_name={device_name}{dtype_selector}{block_shape_selector}{per_channel_quant_selector}{down}.json"

@functools.lru_cache
def get_moe_configs(E, N, dtype, block_n=0, block_k=0, per_channel_quant=False, down_moe=False):
    name = get_config_file_name(E, N, dtype, [block_n, block_k], per_channel_quant, down_moe=down_moe)
    config_dir = os.environ.get("SGLANG_MOE_CONFIG_DIR", os.path.dirname(os.path.realpath(__file__)))
    root = os.path.join(config_dir, "configs")
    wanted = "triton_" + TRITON.replace(".", "_")
    folders = [wanted] + sorted((d for d in (os.listdir(root) if os.path.isdir(root) else [])
                                 if d.startswith("triton_") and d != wanted), reverse=True)
    for folder in folders:
        path = os.path.join(root, folder, name)
        if os.path.exists(path):
            with open(path) as f:
                return {int(k): v for k, v in json.load(f).items()}
    if down_moe:
        return get_moe_configs(E, N, dtype, block_n, block_k, per_channel_quant, down_moe=False)
    return None

def get_default_config(M, E, block_shape):
    if block_shape:
        return {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": block_shape[0], "BLOCK_SIZE_K": block_shape[1],
                "GROUP_SIZE_M": 32, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1}

def try_get_optimal_moe_config(w1_shape, w2_shape, top_k, dtype, M, is_marlin=False, block_shape=None,
                               per_channel_quant=False, return_down_config=False):
    override = get_override()
    down_config = None
    if override:
        config = override
    else:
        E, _, N = w2_shape
        bn, bk = block_shape if block_shape else (0, 0)
        configs = get_moe_configs(E, N, dtype, bn, bk, per_channel_quant=per_channel_quant, down_moe=False)
        config = configs[min(configs, key=lambda x: abs(x - M))] if configs else get_default_config(M, E, block_shape)
        if return_down_config:
            downs = get_moe_configs(E, N, dtype, bn, bk, per_channel_quant=per_channel_quant, down_moe=True)
            if downs:
                down_config = dict(downs[min(downs, key=lambda x: abs(x - M))])
    if return_down_config:
        if down_config is not None and down_config["BLOCK_SIZE_M"] != config["BLOCK_SIZE_M"]:
            down_config["BLOCK_SIZE_M"] = config["BLOCK_SIZE_M"]
        return config, (down_config, None)
    return config
'''

# Before `_down` files (SGLang 0.4.x, vLLM): no down_moe, no return_down_config.
_LOOKUP_OLD = '''
import functools, json, os
CALLS = []

def get_config_file_name(E, N, dtype, block_shape=None):
    dtype_selector = "" if not dtype else f",dtype={dtype}"
    block_shape_selector = "" if not block_shape or not all(block_shape) else f",block_shape={block_shape}"
    return f"E={E},N={N},device_name=NVIDIA_H200{dtype_selector}{block_shape_selector}.json"

@functools.lru_cache
def get_moe_configs(E, N, dtype, block_n=0, block_k=0):
    path = os.path.join(os.path.dirname(os.path.realpath(__file__)), "configs",
                        get_config_file_name(E, N, dtype, [block_n, block_k]))
    if os.path.exists(path):
        with open(path) as f:
            return {int(k): v for k, v in json.load(f).items()}
    return None

def try_get_optimal_moe_config(w1_shape, w2_shape, top_k, dtype, M, is_marlin=False, block_shape=None):
    override = get_config()
    if override:
        return override
    E, _, N = w2_shape
    bn, bk = block_shape if block_shape else (0, 0)
    configs = get_moe_configs(E, N, dtype, bn, bk)
    if configs:
        return configs[min(configs, key=lambda x: abs(x - M))]
    return {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8}
'''

_OVERRIDE = '''
from contextlib import contextmanager
_config = None

@contextmanager
def override_config(config):
    global _config
    old, _config = _config, config
    yield
    _config = old

def get_config():
    return _config
'''

_SGLANG_0523_FUSED = '''
import torch
from .fused_moe_triton_config import try_get_optimal_moe_config, CALLS

def _moe_support_tma():
    return True

def fused_experts(hidden_states, w1, w2, topk_output, moe_runner_config, b1=None, b2=None, use_fp8_w8a8=False,
                  use_int8_w8a8=False, use_int8_w8a16=False, use_int4_w4a16=False, per_channel_quant=False,
                  w1_scale=None, w2_scale=None, w1_zp=None, w2_zp=None, a1_scale=None, a2_scale=None,
                  block_shape=None, a1_q=None, fuse_swiglu_interleaved=False):
    topk_weights, topk_ids, _ = topk_output
    dtype = "fp8_w8a8" if use_fp8_w8a8 else None
    config, (down, _) = try_get_optimal_moe_config(w1.shape, w2.shape, topk_ids.shape[1], dtype,
                                                   hidden_states.shape[0], block_shape=block_shape,
                                                   per_channel_quant=per_channel_quant, return_down_config=True)
    CALLS.append({"up": dict(config), "down": down, "runner": moe_runner_config, "top_k": topk_ids.shape[1],
                  "per_channel_quant": per_channel_quant, "block_shape": block_shape, "fp8": use_fp8_w8a8})
    return torch.zeros_like(hidden_states)
'''

_SGLANG_04_FUSED = _OVERRIDE + '''
import torch
''' + _LOOKUP_OLD + '''

def fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, inplace=False, use_fp8_w8a8=False,
                  per_channel_quant=False, w1_scale=None, w2_scale=None, block_shape=None):
    dtype = "fp8_w8a8" if use_fp8_w8a8 else None
    config = try_get_optimal_moe_config(w1.shape, w2.shape, topk_ids.shape[1], dtype, hidden_states.shape[0],
                                        block_shape=block_shape)
    CALLS.append({"up": dict(config), "down": None, "per_channel_quant": per_channel_quant,
                  "block_shape": block_shape, "fp8": use_fp8_w8a8, "top_k": topk_ids.shape[1]})
    return torch.zeros_like(hidden_states)
'''

_VLLM_FUSED = _SGLANG_04_FUSED.replace(
    "def fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, inplace=False, use_fp8_w8a8=False,\n"
    "                  per_channel_quant=False, w1_scale=None, w2_scale=None, block_shape=None):\n"
    "    dtype = \"fp8_w8a8\" if use_fp8_w8a8 else None",
    "def fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, inplace=False, activation='silu',\n"
    "                  quant_config=None):\n"
    "    use_fp8_w8a8 = quant_config is not None\n"
    "    per_channel_quant = bool(quant_config and quant_config.get('per_act_token_quant'))\n"
    "    block_shape = quant_config.get('block_shape') if quant_config else None\n"
    "    dtype = \"fp8_w8a8\" if use_fp8_w8a8 else None",
)

_RUNNER = '''
from dataclasses import dataclass
from typing import Any, Optional

@dataclass
class MoeRunnerConfig:
    num_experts: Optional[int] = None
    num_local_experts: Optional[int] = None
    hidden_size: Optional[int] = None
    intermediate_size_per_partition: Optional[int] = None
    layer_id: Optional[int] = None
    top_k: Optional[int] = None
    num_fused_shared_experts: Optional[int] = None
    params_dtype: Optional[Any] = None
    activation: str = "silu"
    inplace: bool = True
'''

_TOPK = '''
from typing import NamedTuple, Optional
import torch

class StandardTopKOutput(NamedTuple):
    topk_weights: torch.Tensor
    topk_ids: torch.Tensor
    router_logits: Optional[torch.Tensor]
'''


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _packages(root: Path, dotted: str) -> dict[str, str]:
    """Empty __init__.py files for every package on the way to `dotted` (a module path)."""
    parts = dotted.split(".")
    return {"/".join(parts[:i]) + "/__init__.py": "" for i in range(1, len(parts))}


def install(root: Path, kind: str, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    """Write fake engine `kind` ('sglang-0.5.23', 'sglang-0.4', 'vllm-0.33') under `root`, put it first on
    sys.path, hide the real engines, and return the folder holding its shipped `configs/`."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("sglang", "vllm"):
            monkeypatch.delitem(sys.modules, name)
    files: dict[str, str]
    if kind == "sglang-0.5.23":
        base = "sglang/srt/layers/moe/moe_runner/triton_utils"
        files = {
            **_packages(root, base.replace("/", ".") + ".x"),
            "sglang/__init__.py": '__version__ = "0.5.23"\n',
            "sglang/srt/layers/moe/moe_runner/__init__.py": _RUNNER,
            "sglang/srt/layers/moe/topk.py": _TOPK,
            f"{base}/__init__.py": _OVERRIDE + "from .fused_moe import fused_experts\n",
            f"{base}/fused_moe_triton_config.py": f"TRITON = {TRITON!r}\n" + _LOOKUP.replace(
                "override = get_override()",
                "from sglang.srt.layers.moe.moe_runner.triton_utils import get_config\n    override = get_config()"),
            f"{base}/fused_moe.py": _SGLANG_0523_FUSED,
        }
        config_home = root / base
        monkeypatch.setitem(sys.modules, "vllm", None)
    elif kind == "sglang-0.4":
        base = "sglang/srt/layers/moe/fused_moe_triton"
        files = {
            **_packages(root, base.replace("/", ".") + ".x"),
            "sglang/__init__.py": '__version__ = "0.4.9"\n',
            f"{base}/__init__.py": "from .fused_moe import override_config, fused_experts\n",
            f"{base}/fused_moe.py": _SGLANG_04_FUSED,
        }
        config_home = root / base
        monkeypatch.setitem(sys.modules, "vllm", None)
    elif kind == "vllm-0.33":
        base = "vllm/model_executor/layers/fused_moe"
        files = {
            **_packages(root, base.replace("/", ".") + ".x"),
            "vllm/__init__.py": '__version__ = "0.33.0"\n',
            f"{base}/__init__.py": "from .fused_moe import override_config, fused_experts\n",
            f"{base}/fused_moe.py": _VLLM_FUSED,
            f"{base}/config.py": "def fp8_w8a8_moe_quant_config(w1_scale, w2_scale, per_act_token_quant=False, "
                                 "per_out_ch_quant=False, block_shape=None):\n"
                                 "    return {'per_act_token_quant': per_act_token_quant, 'block_shape': block_shape}\n",
        }
        config_home = root / base
        monkeypatch.setitem(sys.modules, "sglang", None)
    else:
        raise ValueError(kind)
    _write(root, files)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    monkeypatch.delenv("SGLANG_MOE_CONFIG_DIR", raising=False)
    return config_home


def calls(kind: str) -> list[dict]:
    """What the fake engine's fused_experts launched, in order."""
    module = {
        "sglang-0.5.23": "sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config",
        "sglang-0.4": "sglang.srt.layers.moe.fused_moe_triton.fused_moe",
        "vllm-0.33": "vllm.model_executor.layers.fused_moe.fused_moe",
    }[kind]
    return importlib.import_module(module).CALLS

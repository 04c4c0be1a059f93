"""File and folder names the engines look up for tuned kernel configs: the one place that spells them.

Names are built from a MoeShape and the `torch.cuda.get_device_name()` string exactly as SGLang 0.5.23 /
vLLM 0.33 build them. Nothing here writes files or imports torch.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from tuner.errors import ExportError
from tuner.kernels.base import MoeShape, Quant

__all__ = [
    "DeviceToken",
    "describe_device_token",
    "device_file_token",
    "sglang_fp8_gemm_file_name",
    "sglang_moe_file_name",
    "triton_dir_name",
    "vllm_device_token",
    "vllm_fp8_gemm_file_name",
    "vllm_moe_file_name",
]

log = logging.getLogger(__name__)

FP8_DTYPE = "fp8_w8a8"
Engine = Literal["sglang", "vllm"]
# vLLM 0.33 `get_device_name_as_file_name`: every run of whitespace and "/" becomes one "_".
_VLLM_SEPARATORS = re.compile(r"[\s/]+")
# Path separators, NUL/control characters and the characters Windows forbids in file names.
_UNSAFE = re.compile(r'[/\\\x00-\x1f\x7f<>:"|?*]')


@dataclass(frozen=True)
class DeviceToken:
    """The device part of a config file name.

    `engine_token` is what the engine computes (SGLang: each space -> "_", nothing else; vLLM: each run of
    whitespace and "/" -> one "_"); `token` is what we can safely put in a file name. They differ only when the
    engine's token still holds a path separator or another character unsafe in file names; then the engine
    will not find the file under `token` and `changed` is True.
    """

    device_name: str
    engine_token: str
    token: str
    engine: Engine = "sglang"

    @property
    def changed(self) -> bool:
        return self.token != self.engine_token

    @property
    def note(self) -> str:
        if not self.changed:
            return ""
        return (
            f"device name {self.device_name!r} holds characters unsafe in a file name; wrote {self.token!r} "
            f"where {self.engine} looks for {self.engine_token!r}: rename or link the file for {self.engine} to find it"
        )


def describe_device_token(device_name: str, engine: Engine = "sglang") -> DeviceToken:
    """The device token `engine` computes for `device_name` (SGLang 0.5.23 or vLLM 0.33), and the safe one we
    write."""
    if not device_name or not device_name.strip():
        raise ExportError(
            "empty device name: pass the exact torch.cuda.get_device_name() string, "
            "e.g. --device-name 'NVIDIA H100 80GB HBM3'"
        )
    if engine == "vllm":
        engine_token = _VLLM_SEPARATORS.sub("_", device_name)
    else:
        engine_token = device_name.replace(" ", "_")
    return DeviceToken(
        device_name=device_name, engine_token=engine_token, token=_UNSAFE.sub("_", engine_token), engine=engine
    )


def device_file_token(device_name: str, engine: Engine = "sglang") -> str:
    """SGLang: 'NVIDIA H100 80GB HBM3' -> 'NVIDIA_H100_80GB_HBM3', each space becomes '_', nothing else changes.
    vLLM: 'NVIDIA  H100   80GB HBM3' -> 'NVIDIA_H100_80GB_HBM3', each run of whitespace and '/' becomes one '_'.

    Characters still unsafe in a file name ('/' for SGLang, '\\', ':', control characters, ...) are replaced
    by '_' with a warning, since the engine would then look for a different name (see DeviceToken).
    """
    described = describe_device_token(device_name, engine)
    if described.changed:
        log.warning("%s", described.note)
    return described.token


def vllm_device_token(device_name: str) -> str:
    """vLLM 0.33's device token in fused-MoE file names: `device_file_token(..., "vllm")`, except that every
    H200 variant is 'NVIDIA_H200'."""
    token = device_file_token(device_name, "vllm")
    if "H200" in token.split("_"):
        return "NVIDIA_H200"
    return token


def _block_selector(block_shape: tuple[int, int] | None, *, space: bool) -> str:
    if not block_shape:
        return ""
    bn, bk = block_shape
    return f",block_shape=[{bn}, {bk}]" if space else f",block_shape=[{bn},{bk}]"


def sglang_moe_file_name(
    shape: MoeShape,
    device_name: str,
    down: bool = False,
    per_channel_quant: bool | None = None,
) -> str:
    """SGLang's fused-MoE config file name, e.g.
    'E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json'.

    E counts a fused shared expert. `down=True` names the optional config of the second GEMM.
    `per_channel_quant=False` on an FP8 per-channel shape names the per-tensor FP8 file instead (what
    older SGLang tuners wrote for such models; `Quant` has no per-tensor member).
    """
    dtype = f",dtype={FP8_DTYPE}" if shape.quant.is_fp8 else ""
    if per_channel_quant is None:
        per_channel_quant = shape.quant is Quant.FP8_PER_CHANNEL
    per_channel = ",per_channel_quant=True" if per_channel_quant and shape.quant.is_fp8 else ""
    suffix = "_down" if down else ""
    return (
        f"E={shape.num_experts},N={shape.intermediate_size},device_name={device_file_token(device_name)}"
        f"{dtype}{_block_selector(shape.block_shape, space=True)}{per_channel}{suffix}.json"
    )


def vllm_moe_file_name(shape: MoeShape, device_name: str) -> str:
    """vLLM's fused-MoE config file name: E without a fused shared expert, H200 variants as NVIDIA_H200,
    no space in block_shape, no per_channel_quant, no _down."""
    dtype = f",dtype={FP8_DTYPE}" if shape.quant.is_fp8 else ""
    return (
        f"E={shape.routed_experts},N={shape.intermediate_size},device_name={vllm_device_token(device_name)}"
        f"{dtype}{_block_selector(shape.block_shape, space=False)}.json"
    )


_RELEASE = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def triton_dir_name(triton_version: str) -> str:
    """'3.5.1' -> 'triton_3_5_1'. Only the release numbers count: '3.6.0+git9844da95' and '3.6.0rc1' give
    'triton_3_6_0' (SGLang then finds the file through its fall-back to the newest triton_* folder)."""
    match = _RELEASE.match(triton_version or "")
    if not match:
        raise ExportError(
            f"cannot read a Triton version from {triton_version!r}; pass it like --triton-version 3.5.1 "
            f"(python -c 'import triton; print(triton.__version__)')"
        )
    return "triton_" + match.group(1).replace(".", "_")


def _check_gemm(n: int, k: int, block_shape: tuple[int, int]) -> tuple[int, int]:
    for label, value in (("N", n), ("K", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExportError(f"FP8 GEMM {label} must be a positive integer, got {value!r}")
    if len(block_shape) != 2 or any(not isinstance(b, int) or b < 1 for b in block_shape):
        raise ExportError(f"block_shape must be two positive integers like (128, 128), got {block_shape!r}")
    return int(block_shape[0]), int(block_shape[1])


def sglang_fp8_gemm_file_name(n: int, k: int, device_name: str, block_shape: tuple[int, int]) -> str:
    """SGLang's block-FP8 GEMM config name: 'N=576,K=7168,device_name=...,dtype=fp8_w8a8,block_shape=[128, 128].json'."""
    bn, bk = _check_gemm(n, k, block_shape)
    return f"N={n},K={k},device_name={device_file_token(device_name)},dtype={FP8_DTYPE},block_shape=[{bn}, {bk}].json"


def vllm_fp8_gemm_file_name(n: int, k: int, device_name: str, block_shape: tuple[int, int]) -> str:
    """vLLM 0.33's block-FP8 GEMM config name: no space in block_shape; vLLM's device token without the H200
    renaming of its fused-MoE files."""
    bn, bk = _check_gemm(n, k, block_shape)
    return f"N={n},K={k},device_name={device_file_token(device_name, 'vllm')},dtype={FP8_DTYPE},block_shape=[{bn},{bk}].json"

"""Our Triton block-FP8 GEMM and its float32 reference.

A: fp8 e4m3 [M, K] with per-token-group scales As [M, ceil(K / bk)] (one scale per bk columns of a row);
B: fp8 e4m3 [N, K] with block scales Bs [ceil(N / bn), ceil(K / bk)]; C = A x B^T in bf16/fp16 [M, N]. The launch
config has exactly the keys of the engines' GEMM files (BLOCK_SIZE_M/N/K, GROUP_SIZE_M, num_warps, num_stages);
BLOCK_SIZE_K must divide bk, so one scale pair covers each K tile (as in SGLang's kernel).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tuner.kernels.base import KernelConfig
from tuner.kernels.triton_utils import grouped_tile

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0


@triton.jit
def _block_fp8_gemm_kernel(
    a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, M, N, K, group_n, group_k,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
    stride_as_m, stride_as_k, stride_bs_n, stride_bs_k,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr, GROUP_SIZE_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    pid_m, pid_n = grouped_tile(pid, num_pid_m, num_pid_n, GROUP_SIZE_M)

    offs_am = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_bn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    m_mask = offs_am < M
    n_mask = offs_bn < N
    a_ptrs = a_ptr + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_bn[None, :] * stride_bn + offs_k[:, None] * stride_bk
    as_ptrs = as_ptr + offs_am * stride_as_m
    bs_ptrs = bs_ptr + (offs_bn // group_n) * stride_bs_n

    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for k in range(tl.cdiv(K, BLOCK_SIZE_K)):
        k_left = K - k * BLOCK_SIZE_K
        a = tl.load(a_ptrs, mask=m_mask[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & n_mask[None, :], other=0.0)
        k_group = (k * BLOCK_SIZE_K) // group_k
        a_s = tl.load(as_ptrs + k_group * stride_as_k, mask=m_mask, other=0.0)
        b_s = tl.load(bs_ptrs + k_group * stride_bs_k, mask=n_mask, other=0.0)
        acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        a_ptrs += BLOCK_SIZE_K * stride_ak
        b_ptrs += BLOCK_SIZE_K * stride_bk

    c_ptrs = c_ptr + offs_am[:, None] * stride_cm + offs_bn[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def block_fp8_gemm(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
                   block_shape: tuple[int, int], config: KernelConfig,
                   out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """C [M, N] = dequant(A) [M, K] x dequant(B)^T [K, N] in `out_dtype`. ValueError when BLOCK_SIZE_K does not
    divide the block's bk (one scale per K tile) or the scales' shapes do not fit."""
    m, k = a.shape
    n = b.shape[0]
    bn, bk = block_shape
    if bk % config.block_size_k:
        raise ValueError(f"BLOCK_SIZE_K {config.block_size_k} must divide the weight block's {bk}")
    if a_scale.shape != (m, triton.cdiv(k, bk)) or b_scale.shape != (triton.cdiv(n, bn), triton.cdiv(k, bk)):
        raise ValueError(f"scales {tuple(a_scale.shape)} / {tuple(b_scale.shape)} do not fit A {tuple(a.shape)}, "
                         f"B {tuple(b.shape)} and block {block_shape}")
    c = torch.empty((m, n), dtype=out_dtype, device=a.device)
    if m == 0:
        return c
    grid = (triton.cdiv(m, config.block_size_m) * triton.cdiv(n, config.block_size_n),)
    _block_fp8_gemm_kernel[grid](
        a, b, c, a_scale, b_scale, m, n, k, bn, bk,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1),
        BLOCK_SIZE_M=config.block_size_m, BLOCK_SIZE_N=config.block_size_n, BLOCK_SIZE_K=config.block_size_k,
        GROUP_SIZE_M=config.group_size_m, num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return c


def quantize_per_token_group(x: torch.Tensor, group_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] float -> (fp8 [M, K], float32 scales [M, ceil(K / group_k)]); scale = amax / 448 per group, as
    SGLang's per_token_group_quant_fp8 does (quantized with torch, so the interpreter's conversion is avoided)."""
    m, k = x.shape
    groups = triton.cdiv(k, group_k)
    padded = torch.zeros((m, groups * group_k), dtype=torch.float32, device=x.device)
    padded[:, :k] = x.float()
    view = padded.view(m, groups, group_k)
    scale = view.abs().amax(dim=2).clamp(min=1e-10) / FP8_MAX
    q = (view / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q.view(m, groups * group_k)[:, :k].contiguous(), scale


def quantize_weight_blocks(w: torch.Tensor, block_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] float -> (fp8 [N, K], float32 block scales [ceil(N / bn), ceil(K / bk)])."""
    bn, bk = block_shape
    n, k = w.shape
    rb, cb = triton.cdiv(n, bn), triton.cdiv(k, bk)
    padded = torch.zeros((rb * bn, cb * bk), dtype=torch.float32, device=w.device)
    padded[:n, :k] = w.float()
    blocks = padded.view(rb, bn, cb, bk)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-10) / FP8_MAX
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q.view(rb * bn, cb * bk)[:n, :k].contiguous(), scale


def reference_block_fp8_gemm(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
                             block_shape: tuple[int, int]) -> torch.Tensor:
    """The float32 truth: both operands dequantized with their scales, multiplied in float32 ([M, N] float32)."""
    bn, bk = block_shape
    k = a.shape[1]
    a_f = a.float() * a_scale.repeat_interleave(bk, dim=1)[:, :k]
    b_f = b.float() * b_scale.repeat_interleave(bn, dim=0)[: b.shape[0]].repeat_interleave(bk, dim=1)[:, :k]
    return a_f @ b_f.T

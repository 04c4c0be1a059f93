"""Our Triton fused-MoE: align, grouped GEMM (gate+up), SiLU-and-mul, grouped GEMM (down), top-k sum.

dtypes: bf16/fp16; FP8 w8a8 per-channel (per-output-channel weight scales, per-token dynamic activation
scales); FP8 w8a8 block [bn, bk] (weight-block scales, per-token-group activation scales). Both GEMMs take
one `KernelConfig`, with exactly the meaning of the engines' JSON keys. The float32 reference is at the end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tuner.kernels.base import KernelConfig, MoeShape, Quant
from tuner.kernels.fused_moe.align import AlignedRouting, moe_align_block_size
from tuner.kernels.triton_utils import grouped_tile

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _round_to_e4m3_grid(x):
    # The Triton interpreter's fp32 -> e4m3 conversion can drop the rounding carry (127.9 -> 64.0); rounding
    # onto the e4m3 grid first makes that conversion exact. Only compiled in when interpreting.
    a = tl.abs(x)
    e = tl.maximum(tl.floor(tl.log2(tl.maximum(a, 1e-30))), -6.0)
    quantum = tl.exp2(e - 3.0)
    r = tl.minimum(tl.floor(a / quantum + 0.5) * quantum, 448.0)
    return tl.where(x < 0, -r, r)


@triton.jit(do_not_specialize=["num_valid_tokens", "EM"])
def _moe_grouped_gemm_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, topk_weights_ptr,
    sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
    N, K, EM, num_valid_tokens,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_cm, stride_cn,
    stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
    group_n: tl.constexpr, group_k: tl.constexpr,
    A_ROWS_PER_TOKEN: tl.constexpr,  # top_k for the up GEMM (A is per token), 1 for the down GEMM
    MUL_ROUTED_WEIGHT: tl.constexpr,
    QUANT: tl.constexpr,  # 0: none, 1: per-channel w / per-token a, 2: block w / per-group a
    EVEN_K: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
):
    # C[row, :] = A[row // A_ROWS_PER_TOKEN, :] @ B[expert(row)]^T for every sorted row; each program owns a
    # BLOCK_SIZE_M x BLOCK_SIZE_N tile of rows of one expert (alignment guarantees a block never mixes experts).
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(EM, BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    pid_m, pid_n = grouped_tile(pid, num_pid_m, num_pid_n, GROUP_SIZE_M)

    num_tokens_post_padded = tl.load(num_tokens_post_padded_ptr)
    if pid_m * BLOCK_SIZE_M >= num_tokens_post_padded:
        return
    offs_m = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M).to(tl.int64)
    offs_token = tl.load(sorted_token_ids_ptr + offs_m).to(tl.int64)
    token_mask = offs_token < num_valid_tokens
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)

    offs_bn = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N).to(tl.int64)) % N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    a_rows = offs_token // A_ROWS_PER_TOKEN
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + expert * stride_be + offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn

    if QUANT == 1:
        a_scale = tl.load(a_scale_ptr + a_rows * stride_asm, mask=token_mask, other=0.0)
        b_scale = tl.load(b_scale_ptr + expert * stride_bse + offs_bn * stride_bsn)
    if QUANT == 2:
        a_scale_ptrs = a_scale_ptr + a_rows * stride_asm
        b_scale_ptrs = b_scale_ptr + expert * stride_bse + (offs_bn // group_n) * stride_bsn

    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for k in range(tl.cdiv(K, BLOCK_SIZE_K)):
        if EVEN_K:
            a = tl.load(a_ptrs, mask=token_mask[:, None], other=0.0)
            b = tl.load(b_ptrs)
        else:
            k_left = K - k * BLOCK_SIZE_K
            a = tl.load(a_ptrs, mask=token_mask[:, None] & (offs_k[None, :] < k_left), other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if QUANT == 2:
            # BLOCK_SIZE_K divides group_k, so one scale pair covers this whole K tile.
            k_group = (k * BLOCK_SIZE_K) // group_k
            a_s = tl.load(a_scale_ptrs + k_group * stride_ask, mask=token_mask, other=0.0)
            b_s = tl.load(b_scale_ptrs + k_group * stride_bsk)
            acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        else:
            acc += tl.dot(a, b)
        a_ptrs += BLOCK_SIZE_K * stride_ak
        b_ptrs += BLOCK_SIZE_K * stride_bk

    if QUANT == 1:
        acc = acc * a_scale[:, None] * b_scale[None, :]
    if MUL_ROUTED_WEIGHT:
        w = tl.load(topk_weights_ptr + offs_token, mask=token_mask, other=0.0)
        acc = acc * w[:, None]
    offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_ptrs = c_ptr + offs_token[:, None] * stride_cm + offs_cn[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=token_mask[:, None] & (offs_cn[None, :] < N))


@triton.jit
def _quant_rows_kernel(
    x_ptr, q_ptr, s_ptr, ncols, stride_xm, stride_qm, stride_sm,
    GROUP: tl.constexpr,  # columns per scale (a whole row for per-token scales)
    FP8_MAX_C: tl.constexpr, EMULATE_ROUNDING: tl.constexpr,
):
    # One program per (row, group): dynamic symmetric scale = amax / FP8_MAX.
    row = tl.program_id(0)
    g = tl.program_id(1)
    cols = g * GROUP + tl.arange(0, GROUP)
    mask = cols < ncols
    x = tl.load(x_ptr + row * stride_xm + cols, mask=mask, other=0.0).to(tl.float32)
    amax = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-10)
    scale = amax / FP8_MAX_C
    q = tl.clamp(x / scale, -FP8_MAX_C, FP8_MAX_C)
    if EMULATE_ROUNDING:
        q = _round_to_e4m3_grid(q)
    tl.store(q_ptr + row * stride_qm + cols, q.to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + row * stride_sm + g, scale)


@triton.jit
def _silu_mul_quant_kernel(
    h_ptr, out_ptr, s_ptr, n, stride_hm, stride_om, stride_sm,
    GROUP: tl.constexpr, QUANTIZE: tl.constexpr, FP8_MAX_C: tl.constexpr, EMULATE_ROUNDING: tl.constexpr,
):
    # out = silu(h[:, :n]) * h[:, n:], optionally quantized to fp8 with one scale per GROUP columns.
    row = tl.program_id(0)
    g = tl.program_id(1)
    cols = g * GROUP + tl.arange(0, GROUP)
    mask = cols < n
    gate = tl.load(h_ptr + row * stride_hm + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(h_ptr + row * stride_hm + n + cols, mask=mask, other=0.0).to(tl.float32)
    act = gate / (1.0 + tl.exp(-gate)) * up
    if QUANTIZE:
        amax = tl.maximum(tl.max(tl.abs(act), axis=0), 1e-10)
        scale = amax / FP8_MAX_C
        act = tl.clamp(act / scale, -FP8_MAX_C, FP8_MAX_C)
        if EMULATE_ROUNDING:
            act = _round_to_e4m3_grid(act)
        tl.store(s_ptr + row * stride_sm + g, scale)
    tl.store(out_ptr + row * stride_om + cols, act.to(out_ptr.dtype.element_ty), mask=mask)


@dataclass(frozen=True)
class MoeWeights:
    """Expert weights in the layout the engines use: w1 [E, 2N, K] (gate rows then up rows), w2 [E, K, N]."""

    w1: torch.Tensor
    w2: torch.Tensor
    w1_scale: torch.Tensor | None = None  # per-channel [E, 2N]; block [E, 2N/bn, K/bk]
    w2_scale: torch.Tensor | None = None  # per-channel [E, K]; block [E, K/bn, N/bk]


def _act_group(shape: MoeShape, ncols: int) -> int:
    if shape.quant is Quant.FP8_BLOCK:
        assert shape.block_shape is not None
        return shape.block_shape[1]
    return triton.next_power_of_2(ncols)  # one group covering the whole row


def quantize_activations(x: torch.Tensor, shape: MoeShape) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic fp8 quantization: per token (per-channel scheme) or per token-group of bk (block scheme)."""
    rows, ncols = x.shape
    group = _act_group(shape, ncols)
    ngroups = triton.cdiv(ncols, group)
    q = torch.empty((rows, ncols), dtype=FP8_DTYPE, device=x.device)
    s = torch.empty((rows, ngroups), dtype=torch.float32, device=x.device)
    if rows:
        _quant_rows_kernel[(rows, ngroups)](
            x, q, s, ncols, x.stride(0), q.stride(0), s.stride(0), GROUP=group, FP8_MAX_C=FP8_MAX,
            EMULATE_ROUNDING=_interpreting(),
        )
    return q, s


def _grouped_gemm(
    a: torch.Tensor, a_scale: torch.Tensor | None, b: torch.Tensor, b_scale: torch.Tensor | None,
    c: torch.Tensor, routing: AlignedRouting, topk_weights: torch.Tensor, shape: MoeShape,
    config: KernelConfig, a_rows_per_token: int, mul_routed_weight: bool,
) -> None:
    num_valid = topk_weights.numel()
    em = routing.sorted_token_ids.numel()
    n_out, k_in = b.shape[1], b.shape[2]
    quant = {Quant.BF16: 0, Quant.FP8_PER_CHANNEL: 1, Quant.FP8_BLOCK: 2}[shape.quant]
    group_n, group_k = shape.block_shape if shape.block_shape else (0, 0)
    if quant == 2 and group_k % config.block_size_k:
        raise ValueError(f"BLOCK_SIZE_K={config.block_size_k} must divide the quantization group {group_k}")
    a_s = a_scale if a_scale is not None else a
    b_s = b_scale if b_scale is not None else b
    if quant == 1:
        bs_strides = (b_s.stride(0), b_s.stride(1), 0)
    elif quant == 2:
        bs_strides = (b_s.stride(0), b_s.stride(1), b_s.stride(2))
    else:
        bs_strides = (0, 0, 0)
    as_strides = (a_s.stride(0), a_s.stride(1)) if a_scale is not None else (0, 0)
    grid = (triton.cdiv(em, config.block_size_m) * triton.cdiv(n_out, config.block_size_n),)
    _moe_grouped_gemm_kernel[grid](
        a, b, c, a_s, b_s, topk_weights,
        routing.sorted_token_ids, routing.expert_ids, routing.num_tokens_post_padded,
        n_out, k_in, em, num_valid,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), b.stride(2), c.stride(0), c.stride(1),
        *as_strides, *bs_strides,
        group_n=group_n, group_k=group_k,
        A_ROWS_PER_TOKEN=a_rows_per_token, MUL_ROUTED_WEIGHT=mul_routed_weight, QUANT=quant,
        EVEN_K=(k_in % config.block_size_k == 0),
        BLOCK_SIZE_M=config.block_size_m, BLOCK_SIZE_N=config.block_size_n, BLOCK_SIZE_K=config.block_size_k,
        GROUP_SIZE_M=config.group_size_m, num_warps=config.num_warps, num_stages=config.num_stages,
    )


def fused_moe(
    x: torch.Tensor, weights: MoeWeights, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
    shape: MoeShape, config: KernelConfig, down_config: KernelConfig | None = None,
) -> torch.Tensor:
    """out[t] = sum_j topk_weights[t, j] * down_e(silu(gate_e(x[t])) * up_e(x[t])), e = topk_ids[t, j].

    x: [M, K]; topk_weights, topk_ids: [M, top_k]; returns [M, K] in x's dtype. `config` runs the up GEMM and,
    unless `down_config` is given, the down GEMM too; a down config must share BLOCK_SIZE_M (one alignment).
    USE_TMA is SGLang's own path: our kernel ignores it (ValueError if asked for).
    """
    down = down_config or config
    if down.block_size_m != config.block_size_m:
        raise ValueError(f"down config {down.key} must share BLOCK_SIZE_M with {config.key}")
    if config.use_tma or down.use_tma:
        raise ValueError("USE_TMA is an SGLang kernel option; tuner's own kernel has no TMA path")
    num_tokens, hidden = x.shape
    top_k = topk_ids.shape[1]
    n = shape.intermediate_size
    routing = moe_align_block_size(topk_ids, shape.num_experts, config.block_size_m)
    fp8 = shape.quant.is_fp8
    if fp8:
        a1, a1_scale = quantize_activations(x, shape)
    else:
        a1, a1_scale = x, None
    h = torch.empty((num_tokens * top_k, 2 * n), dtype=x.dtype, device=x.device)
    _grouped_gemm(a1, a1_scale, weights.w1, weights.w1_scale, h, routing, topk_weights, shape, config,
                  a_rows_per_token=top_k, mul_routed_weight=False)
    rows = num_tokens * top_k
    group = _act_group(shape, n)
    ngroups = triton.cdiv(n, group)
    act = torch.empty((rows, n), dtype=FP8_DTYPE if fp8 else x.dtype, device=x.device)
    act_scale = torch.empty((rows, ngroups), dtype=torch.float32, device=x.device) if fp8 else None
    if rows:
        _silu_mul_quant_kernel[(rows, ngroups)](
            h, act, act_scale if act_scale is not None else act, n, h.stride(0), act.stride(0),
            act_scale.stride(0) if act_scale is not None else 0,
            GROUP=group, QUANTIZE=fp8, FP8_MAX_C=FP8_MAX, EMULATE_ROUNDING=_interpreting(),
        )
    y = torch.empty((rows, hidden), dtype=x.dtype, device=x.device)
    _grouped_gemm(act, act_scale, weights.w2, weights.w2_scale, y, routing, topk_weights, shape, down,
                  a_rows_per_token=1, mul_routed_weight=True)
    return y.view(num_tokens, top_k, hidden).sum(dim=1)


# ---------------------------------------------------------------- inputs and the float32 reference


def make_weights(shape: MoeShape, dtype: torch.dtype, device: str | torch.device, seed: int) -> MoeWeights:
    """Random expert weights at the scale of real checkpoints (unit-variance activations stay O(1))."""
    # Generated (and quantized) on the target device: hundreds of MB per copy for real shapes.
    g = torch.Generator(device=device).manual_seed(seed)
    e, n, k = shape.num_experts, shape.intermediate_size, shape.hidden_size

    def rand(size: tuple[int, int, int], fan_in: int) -> torch.Tensor:
        return torch.randn(size, generator=g, device=device) / fan_in**0.5

    if not shape.quant.is_fp8:
        return MoeWeights(rand((e, 2 * n, k), k).to(dtype), rand((e, k, n), n).to(dtype))
    if shape.quant is Quant.FP8_PER_CHANNEL:
        q1, s1 = _quantize_weight_per_channel(rand((e, 2 * n, k), k))
        q2, s2 = _quantize_weight_per_channel(rand((e, k, n), n))
    else:
        assert shape.block_shape is not None
        q1, s1 = _quantize_weight_blocks(rand((e, 2 * n, k), k), shape.block_shape)
        q2, s2 = _quantize_weight_blocks(rand((e, k, n), n), shape.block_shape)
    return MoeWeights(q1, q2, s1, s2)


def placeholder_weights(shape: MoeShape, dtype: torch.dtype, device: str | torch.device) -> MoeWeights:
    """Weights of the right dtypes, shapes and strides with unset values (w1 [E, 2N, K], w2 [E, K, N], scales as
    `make_weights` makes them): for compiling a kernel, never for results. No float32 temporaries."""
    e, n, k = shape.num_experts, shape.intermediate_size, shape.hidden_size
    if not shape.quant.is_fp8:
        return MoeWeights(torch.empty((e, 2 * n, k), dtype=dtype, device=device),
                          torch.empty((e, k, n), dtype=dtype, device=device))
    w1 = torch.empty((e, 2 * n, k), dtype=FP8_DTYPE, device=device)
    w2 = torch.empty((e, k, n), dtype=FP8_DTYPE, device=device)
    if shape.quant is Quant.FP8_PER_CHANNEL:
        s1, s2 = torch.ones((e, 2 * n), device=device), torch.ones((e, k), device=device)
    else:
        assert shape.block_shape is not None
        bn, bk = shape.block_shape
        s1 = torch.ones((e, triton.cdiv(2 * n, bn), triton.cdiv(k, bk)), device=device)
        s2 = torch.ones((e, triton.cdiv(k, bn), triton.cdiv(n, bk)), device=device)
    return MoeWeights(w1, w2, s1, s2)


def _quantize_weight_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = w.abs().amax(dim=2).clamp(min=1e-10) / FP8_MAX  # [E, rows]
    q = (w / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale.float()


def _quantize_weight_blocks(w: torch.Tensor, block_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    bn, bk = block_shape
    e, rows, cols = w.shape
    rb, cb = triton.cdiv(rows, bn), triton.cdiv(cols, bk)
    padded = torch.zeros((e, rb * bn, cb * bk), dtype=w.dtype, device=w.device)
    padded[:, :rows, :cols] = w
    blocks = padded.view(e, rb, bn, cb, bk)
    scale = blocks.abs().amax(dim=(2, 4)).clamp(min=1e-10) / FP8_MAX  # [E, rb, cb]
    q = (blocks / scale[:, :, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q.view(e, rb * bn, cb * bk)[:, :rows, :cols].contiguous(), scale.float()


def dequantize_weight(w: torch.Tensor, scale: torch.Tensor | None, shape: MoeShape) -> torch.Tensor:
    wf = w.float()
    if scale is None:
        return wf
    if shape.quant is Quant.FP8_PER_CHANNEL:
        return wf * scale[..., None]
    assert shape.block_shape is not None
    bn, bk = shape.block_shape
    full = scale.repeat_interleave(bn, dim=1).repeat_interleave(bk, dim=2)
    return wf * full[:, : w.shape[1], : w.shape[2]]


def _fake_quant_rows(x: torch.Tensor, group: int) -> torch.Tensor:
    """What our dynamic activation quantization does to x, in float32 (quantize, then dequantize)."""
    rows, cols = x.shape
    ngroups = triton.cdiv(cols, group)
    padded = torch.zeros((rows, ngroups * group), dtype=torch.float32, device=x.device)
    padded[:, :cols] = x.float()
    blocks = padded.view(rows, ngroups, group)
    scale = blocks.abs().amax(dim=2, keepdim=True).clamp(min=1e-10) / FP8_MAX
    q = (blocks / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).float() * scale
    return q.view(rows, -1)[:, :cols]


def reference_fused_moe(
    x: torch.Tensor, weights: MoeWeights, topk_weights: torch.Tensor, topk_ids: torch.Tensor, shape: MoeShape,
) -> torch.Tensor:
    """Float32 reference. For FP8 it applies the same activation quantization as the kernel, and it rounds
    where the kernel stores (the gate/up output and each expert's output are kept in the activation dtype), so
    a correct kernel lands near 1e-3 instead of the 2-6% that rounding differences alone would cause."""
    n = shape.intermediate_size
    w1 = dequantize_weight(weights.w1, weights.w1_scale, shape)
    w2 = dequantize_weight(weights.w2, weights.w2_scale, shape)
    xf = x.float()
    if shape.quant.is_fp8:
        xf = _fake_quant_rows(xf, _act_group(shape, x.shape[1]))
    out = torch.zeros((x.shape[0], w2.shape[1]), dtype=torch.float32, device=x.device)
    flat_ids = topk_ids.reshape(-1)
    token_of = torch.arange(topk_ids.numel(), device=x.device) // topk_ids.shape[1]
    for e in torch.unique(flat_ids).tolist():
        pairs = (flat_ids == e).nonzero().squeeze(1)
        tokens = token_of[pairs]
        h = (xf[tokens] @ w1[e].T).to(x.dtype).float()
        act = torch.nn.functional.silu(h[:, :n]) * h[:, n:]
        if shape.quant.is_fp8:
            act = _fake_quant_rows(act, _act_group(shape, n))
        y = ((act @ w2[e].T) * topk_weights.reshape(-1)[pairs, None].float()).to(x.dtype).float()
        out.index_add_(0, tokens, y)
    return out


def random_routing(
    num_tokens: int, shape: MoeShape, device: str | torch.device, generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random top-k over the routed experts; with a fused shared expert, the extra slot always
    routes to it (the last expert), as the engines do. Weights are softmax-normalised."""
    scores = torch.rand((num_tokens, shape.routed_experts), generator=generator)
    ids = scores.topk(shape.top_k, dim=1).indices
    weights = torch.softmax(torch.randn((num_tokens, shape.top_k), generator=generator), dim=1)
    if shape.fused_shared_experts:
        shared = torch.full((num_tokens, 1), shape.num_experts - 1, dtype=ids.dtype)
        ids = torch.cat([ids, shared], dim=1)
        weights = torch.cat([weights, torch.ones((num_tokens, 1))], dim=1)
    return weights.float().to(device), ids.to(torch.int32).to(device)

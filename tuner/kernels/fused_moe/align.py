"""Token-to-expert alignment for the fused-MoE kernel, as two Triton launches (CUDA-graph capturable).

Sorts the (token, slot) pairs of `topk_ids` by expert and pads every expert's segment to a multiple of
BLOCK_SIZE_M, so each program of the grouped GEMM works on rows of exactly one expert. No host sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@triton.jit
def _histogram_kernel(
    topk_ids_ptr, counts_ptr, sorted_ids_ptr, numel, max_padded, CHUNK: tl.constexpr,
):
    # Every program also fills its slice of sorted_ids with the padding sentinel (numel).
    offs = tl.program_id(0) * CHUNK + tl.arange(0, CHUNK)
    tl.store(sorted_ids_ptr + offs, tl.zeros([CHUNK], dtype=tl.int32) + numel, mask=offs < max_padded)
    mask = offs < numel
    ids = tl.load(topk_ids_ptr + offs, mask=mask, other=0)
    tl.atomic_add(counts_ptr + ids, 1, mask=mask)


@triton.jit
def _scan_kernel(
    counts_ptr, cursor_ptr, ends_ptr, num_post_padded_ptr, num_experts,
    BLOCK_SIZE_M: tl.constexpr, NUM_BINS: tl.constexpr,
):
    bins = tl.arange(0, NUM_BINS)
    counts = tl.load(counts_ptr + bins, mask=bins < num_experts, other=0)
    padded = ((counts + BLOCK_SIZE_M - 1) // BLOCK_SIZE_M) * BLOCK_SIZE_M
    ends = tl.cumsum(padded, axis=0)
    tl.store(cursor_ptr + bins, ends - padded, mask=bins < num_experts)
    tl.store(ends_ptr + bins, ends, mask=bins < num_experts)
    tl.store(num_post_padded_ptr, tl.sum(padded, axis=0))


@triton.jit
def _scatter_kernel(
    topk_ids_ptr, cursor_ptr, ends_ptr, sorted_ids_ptr, expert_ids_ptr, num_post_padded_ptr,
    numel, num_experts, max_blocks,
    BLOCK_SIZE_M: tl.constexpr, NUM_BINS: tl.constexpr, CHUNK: tl.constexpr,
):
    offs = tl.program_id(0) * CHUNK + tl.arange(0, CHUNK)
    mask = offs < numel
    ids = tl.load(topk_ids_ptr + offs, mask=mask, other=0)
    # Order inside an expert's segment is arbitrary; every row is computed independently downstream.
    pos = tl.atomic_add(cursor_ptr + ids, 1, mask=mask)
    tl.store(sorted_ids_ptr + pos, offs.to(tl.int32), mask=mask)
    # expert of block b = number of experts whose padded segment ends at or before b * BLOCK_SIZE_M
    bins = tl.arange(0, NUM_BINS)
    ends = tl.load(ends_ptr + bins, mask=bins < num_experts, other=2147483647)
    total = tl.load(num_post_padded_ptr)
    row = offs * BLOCK_SIZE_M
    eid = tl.sum((ends[None, :] <= row[:, None]).to(tl.int32), axis=1)
    eid = tl.where(row < total, eid, -1)
    tl.store(expert_ids_ptr + offs, eid, mask=offs < max_blocks)


@dataclass(frozen=True)
class AlignedRouting:
    sorted_token_ids: torch.Tensor  # [max_padded] int32; entries == numel are padding
    expert_ids: torch.Tensor  # [max_blocks] int32; -1 past the end
    num_tokens_post_padded: torch.Tensor  # [1] int32


def max_padded_length(numel: int, num_experts: int, block_size_m: int) -> int:
    return numel + num_experts * (block_size_m - 1)


def moe_align_block_size(topk_ids: torch.Tensor, num_experts: int, block_size_m: int) -> AlignedRouting:
    """Group the flattened (token, slot) pairs by expert, padded per expert to `block_size_m` rows."""
    numel = topk_ids.numel()
    max_padded = max_padded_length(numel, num_experts, block_size_m)
    max_blocks = triton.cdiv(max_padded, block_size_m)
    device = topk_ids.device
    flat = topk_ids.reshape(-1)
    counts = torch.zeros(num_experts, dtype=torch.int32, device=device)
    cursor = torch.empty(num_experts, dtype=torch.int32, device=device)
    ends = torch.empty(num_experts, dtype=torch.int32, device=device)
    expert_ids = torch.empty(max_blocks, dtype=torch.int32, device=device)
    sorted_ids = torch.empty(max_padded, dtype=torch.int32, device=device)
    post = torch.empty(1, dtype=torch.int32, device=device)
    num_bins = triton.next_power_of_2(num_experts)
    chunk = 1024
    _histogram_kernel[(triton.cdiv(max(numel, max_padded), chunk),)](
        flat, counts, sorted_ids, numel, max_padded, CHUNK=chunk
    )
    _scan_kernel[(1,)](counts, cursor, ends, post, num_experts, BLOCK_SIZE_M=block_size_m, NUM_BINS=num_bins)
    scatter_chunk = 64 if num_bins <= 512 else 16
    _scatter_kernel[(triton.cdiv(max(numel, max_blocks), scatter_chunk),)](
        flat, cursor, ends, sorted_ids, expert_ids, post, numel, num_experts, max_blocks,
        BLOCK_SIZE_M=block_size_m, NUM_BINS=num_bins, CHUNK=scatter_chunk,
    )
    return AlignedRouting(sorted_ids, expert_ids, post)

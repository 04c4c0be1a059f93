"""The block-FP8 GEMM kernel family (dense layers): C[M, N] = A[M, K] x B[N, K]^T with per-token-group activation
scales and [bn, bk] weight-block scales, as SGLang's `w8a8_block_fp8_matmul_triton` computes it. `kernel` holds our
Triton kernel (the CI path and proxy), the quantizers and the float32 reference."""

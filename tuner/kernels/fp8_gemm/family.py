"""The block-FP8 GEMM as a kernel family (`tuner.kernels.family.KernelFamily`)."""

from __future__ import annotations

from typing import Any

from tuner.kernels.base import GemmShape
from tuner.kernels.fp8_gemm.space import GemmConfig


class Fp8Gemm:
    name = "fp8_gemm"

    def shape_to_json(self, shape: GemmShape) -> dict[str, Any]:
        return {"n": shape.n, "k": shape.k, "block_shape": list(shape.block_shape), "layers": list(shape.layers),
                "quant": "fp8_w8a8_block"}

    def shape_from_json(self, data: dict[str, Any]) -> GemmShape:
        return GemmShape(int(data["n"]), int(data["k"]), tuple(data["block_shape"]), tuple(data.get("layers", ())))  # type: ignore[arg-type]

    def shape_key(self, shape: GemmShape) -> str:
        return shape.key

    def get_backend(self, kernel_source: str | None) -> Any:
        from tuner.kernels.fp8_gemm.backends import get_gemm_backend

        return get_gemm_backend(kernel_source)

    def compile_probe(self, shape_json: dict[str, Any], backend_name: str) -> GemmCompileProbe:
        return GemmCompileProbe(self.shape_from_json(shape_json), backend_name)


class GemmCompileProbe:
    """Runs a candidate once at the batch size being swept on placeholder operands (values never matter)."""

    def __init__(self, shape: GemmShape, backend_name: str) -> None:
        import torch
        import triton

        from tuner.kernels.fp8_gemm.backends import get_gemm_backend
        from tuner.kernels.fp8_gemm.kernel import FP8_DTYPE

        self.shape = shape
        self.backend = get_gemm_backend(backend_name)
        bn, bk = shape.block_shape
        self.b = torch.empty((shape.n, shape.k), dtype=FP8_DTYPE, device="cuda")
        self.b_scale = torch.ones((triton.cdiv(shape.n, bn), triton.cdiv(shape.k, bk)), device="cuda")
        self._a: dict[int, tuple] = {}

    def compile(self, configs_key: str, batch_size: int) -> tuple[str, str]:
        import torch
        import triton

        from tuner.kernels.fp8_gemm.kernel import FP8_DTYPE

        try:
            if batch_size not in self._a:
                k, bk = self.shape.k, self.shape.block_shape[1]
                self._a = {batch_size: (torch.empty((batch_size, k), dtype=FP8_DTYPE, device="cuda"),
                                        torch.ones((batch_size, triton.cdiv(k, bk)), device="cuda"))}
            a, a_s = self._a[batch_size]
            self.backend.run(a, a_s, self.b, self.b_scale, self.shape.block_shape, GemmConfig.from_key(configs_key))
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - any failure to build or launch is data about this config
            return "compile_error", f"{type(exc).__name__}: {str(exc)[:300]}"
        return "ok", ""

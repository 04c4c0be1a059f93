"""The fused MoE as a kernel family (`tuner.kernels.family.KernelFamily`): what the sweep, the compile pool and
the store see of it."""

from __future__ import annotations

import dataclasses
from typing import Any

from tuner.kernels.base import MoeConfigs, MoeShape, Quant

# Above this many weight bytes a compile worker holds a reduced copy (fewer experts) instead of the real one;
# each of up to 16 workers holds its own copy.
FULL_WEIGHTS_MAX_BYTES = 3 * 2**30


class FusedMoe:
    name = "fused_moe"

    def shape_to_json(self, shape: MoeShape) -> dict[str, Any]:
        return {**dataclasses.asdict(shape), "quant": shape.quant.value}

    def shape_from_json(self, data: dict[str, Any]) -> MoeShape:
        fields = dict(data)
        fields["quant"] = Quant(fields["quant"])
        if fields.get("block_shape") is not None:
            fields["block_shape"] = tuple(fields["block_shape"])
        return MoeShape(**fields)

    def shape_key(self, shape: MoeShape) -> str:
        return shape.key

    def get_backend(self, kernel_source: str | None) -> Any:
        from tuner.kernels.fused_moe.backends import get_backend

        return get_backend(kernel_source)

    def compile_probe(self, shape_json: dict[str, Any], backend_name: str) -> MoeCompileProbe:
        return MoeCompileProbe(self.shape_from_json(shape_json), backend_name)


class MoeCompileProbe:
    """Runs a candidate once on the real shape at the batch size being swept (the engines' kernels specialise on
    top_k and on the divisibility of token and expert counts), with placeholder weights: values never matter."""

    def __init__(self, shape: MoeShape, backend_name: str) -> None:
        import torch

        from tuner.kernels.fused_moe.backends import get_backend
        from tuner.kernels.fused_moe.kernel import placeholder_weights
        from tuner.kernels.fused_moe.problem import weight_bytes

        small = shape
        if weight_bytes(shape) > FULL_WEIGHTS_MAX_BYTES:
            small = dataclasses.replace(shape, num_experts=shape.runtime_top_k + 1)
        self.shape = small
        self.weights = placeholder_weights(small, torch.bfloat16, "cuda")
        self.backend = get_backend(backend_name)
        self._inputs: dict[int, tuple] = {}

    def _inputs_for(self, batch_size: int) -> tuple:
        import torch

        from tuner.kernels.fused_moe.kernel import random_routing

        if batch_size not in self._inputs:
            g = torch.Generator().manual_seed(batch_size)
            x = torch.randn((batch_size, self.shape.hidden_size), generator=g).to("cuda", torch.bfloat16)
            self._inputs = {batch_size: (x, *random_routing(batch_size, self.shape, "cuda", g))}
        return self._inputs[batch_size]

    def compile(self, configs_key: str, batch_size: int) -> tuple[str, str]:
        import torch

        try:
            x, tw, ti = self._inputs_for(batch_size)
            self.backend.run(x, self.weights, tw, ti, self.shape, MoeConfigs.from_key(configs_key))
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - any failure to build or launch is data about this config
            return "compile_error", f"{type(exc).__name__}: {str(exc)[:300]}"
        return "ok", ""

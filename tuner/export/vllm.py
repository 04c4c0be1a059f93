"""vLLM exporter: one flat folder `<out>/vllm/E=...json` with a top-level "triton_version" key, loadable with
`VLLM_TUNED_CONFIG_FOLDER=<out>/vllm`.

It only lays out and writes files; names come from tuner.export.naming.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from tuner.export.base import PlannedFile, PlannedFilesExporter
from tuner.export.naming import (
    describe_device_token,
    vllm_device_token,
    vllm_moe_file_name,
)
from tuner.kernels.base import MoeShape

VLLM_FOLDER = "vllm"


class VllmExporter(PlannedFilesExporter):
    """Fused-MoE configs for vLLM, in one flat folder."""

    name = "vllm"

    def plan(self, shape: MoeShape, device_name: str, triton_version: str, down: bool = False) -> list[PlannedFile]:
        notes = []
        device = describe_device_token(device_name, "vllm")
        if device.changed:
            notes.append(device.note)
        elif vllm_device_token(device_name) != device.token:
            notes.append(f"vLLM names every H200 variant NVIDIA_H200 ({device_name!r} included)")
        if shape.fused_shared_experts:
            notes.append(
                f"vLLM does not fuse the shared expert: the file is named E={shape.routed_experts}, but its configs "
                f"were tuned with E={shape.num_experts} and top-k {shape.top_k}+{shape.fused_shared_experts}; "
                f"tune with --no-shared-experts-fusion for an exact vLLM shape"
            )
        if down:
            notes.append("vLLM reads one config for both GEMMs: its file holds the best single config per M, "
                         "not SGLang's separate up/_down pair")
        name = vllm_moe_file_name(shape, device_name)
        extra = (
            {"triton_version": triton_version.strip()} if triton_version and triton_version.strip() else {}
        )
        return [PlannedFile(self.name, PurePosixPath(VLLM_FOLDER, name), extra=extra, notes=tuple(notes), role="single")]

    def usage_hint(self, out_dir: Path) -> str:
        return f"VLLM_TUNED_CONFIG_FOLDER={(Path(out_dir) / VLLM_FOLDER).resolve()}"

"""SGLang exporter: `<out>/configs/triton_<x_y_z>/E=...json` (and its `_down` twin when the down GEMM was tuned
separately), loadable with `SGLANG_MOE_CONFIG_DIR=<out>`.

It only lays out and writes files; names come from tuner.export.naming.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from tuner.export.base import PlannedFile, PlannedFilesExporter
from tuner.export.naming import describe_device_token, sglang_moe_file_name, triton_dir_name
from tuner.kernels.base import MoeShape

CONFIG_FOLDER = "configs"


class SglangExporter(PlannedFilesExporter):
    """Fused-MoE configs for SGLang, in its Triton-version folder layout."""

    name = "sglang"

    def plan(self, shape: MoeShape, device_name: str, triton_version: str, down: bool = False) -> list[PlannedFile]:
        version_dir = triton_dir_name(triton_version)
        notes = []
        device = describe_device_token(device_name)
        if device.changed:
            notes.append(device.note)
        exact_dir = "triton_" + triton_version.strip().replace(".", "_")
        if exact_dir != version_dir:
            notes.append(
                f"Triton {triton_version!r}: SGLang looks in {exact_dir}/ first, then falls back (with a warning) "
                f"to the newest triton_* folder holding the file, i.e. {version_dir}/"
            )
        name = sglang_moe_file_name(shape, device_name)
        files = [PlannedFile(self.name, PurePosixPath(CONFIG_FOLDER, version_dir, name), notes=tuple(notes))]
        if down:  # the down GEMM's own configs, read by SGLang >= 0.5 beside the up file
            down_name = sglang_moe_file_name(shape, device_name, down=True)
            files.append(PlannedFile(self.name, PurePosixPath(CONFIG_FOLDER, version_dir, down_name), notes=tuple(notes),
                                     role="down"))
        return files

    def usage_hint(self, out_dir: Path) -> str:
        return f"SGLANG_MOE_CONFIG_DIR={Path(out_dir).resolve()}"

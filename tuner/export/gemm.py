"""Block-FP8 GEMM config files from the results database: SGLang's (with its sm90 SWAP_AB / SPLIT_K keys) and
vLLM's (the best config without them, which vLLM's kernel can read).

SGLang 0.5.23 reads GEMM files only from its installed package folder (`sglang/kernels/ops/gemm/configs/`), so
they are written to `<out>/sglang-fp8-gemm/` and `tuner export --install` copies them into the installed
SGLang's folder after listing what it replaces. vLLM reads `VLLM_TUNED_CONFIG_FOLDER` (`<out>/vllm`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import ExportError
from tuner.export.base import write_text_atomically
from tuner.export.naming import sglang_fp8_gemm_file_name, vllm_fp8_gemm_file_name
from tuner.kernels.base import GemmShape

SGLANG_GEMM_FOLDER = "sglang-fp8-gemm"
VLLM_FOLDER = "vllm"


@dataclass(frozen=True)
class GemmFile:
    path: Path
    engine: str
    sweep_id: int


def _text(entries: dict[int, dict]) -> str:
    """The engines' file format: M ascending as strings, 4-space indent, a trailing newline."""
    return json.dumps({str(m): entries[m] for m in sorted(entries)}, indent=4) + "\n"


def gemm_files(best: Mapping[int, Any], device_name: str, shape: GemmShape,
               formats: list[str]) -> dict[Path, tuple[str, str]]:
    """relative path -> (engine, text) for one GEMM sweep's best configs (batch size -> a stored BestConfig)."""
    if not best:
        return {}
    files: dict[Path, tuple[str, str]] = {}
    for fmt in formats:
        if fmt == "sglang":
            name = sglang_fp8_gemm_file_name(shape.n, shape.k, device_name, shape.block_shape)
            files[Path(SGLANG_GEMM_FOLDER, name)] = ("sglang", _text({m: b.config for m, b in best.items()}))
        elif fmt == "vllm":
            name = vllm_fp8_gemm_file_name(shape.n, shape.k, device_name, shape.block_shape)
            plain = {m: (b.single_config or b.config) for m, b in best.items()}
            files[Path(VLLM_FOLDER, name)] = ("vllm", _text(plain))
        else:
            raise ExportError(f"unknown export format {fmt!r}; valid formats: sglang, vllm")
    return files


def write_gemm_files(out_dir: Path, files: dict[Path, tuple[str, str]], sweep_id: int, force: bool) -> list[GemmFile]:
    existing = [out_dir / rel for rel in files if (out_dir / rel).exists()]
    if existing and not force:
        raise ExportError(f"refusing to overwrite existing file(s): {', '.join(map(str, existing))}; "
                          "pass --force to replace them")
    written = []
    for rel, (engine, text) in files.items():
        write_text_atomically(out_dir / rel, text)
        written.append(GemmFile(out_dir / rel, engine, sweep_id))
    return written


def install_sglang_gemm_files(files: list[Path], folder: Path, print_fn) -> list[Path]:  # type: ignore[no-untyped-def]
    """Copy SGLang GEMM files into the installed SGLang's config folder, saying first which files it replaces."""
    if not folder.is_dir():
        raise ExportError(f"SGLang's GEMM config folder {folder} does not exist; is this the SGLang you run?")
    for src in files:
        target = folder / src.name
        print_fn(f"install {src.name} -> {folder}" + (" (replaces the file there)" if target.exists() else ""))
    installed = []
    for src in files:
        try:
            shutil.copyfile(src, folder / src.name)
        except OSError as exc:
            raise ExportError(f"cannot write {folder / src.name}: {exc.strerror or exc}; run with the rights to "
                              "SGLang's package folder, or copy the files there yourself") from exc
        installed.append(folder / src.name)
    return installed

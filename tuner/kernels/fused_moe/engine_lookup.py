"""How SGLang finds its fused-MoE config files, and a private folder that feeds it the configs under test.

SGLang's `override_config` replaces the lookup for both GEMMs and drops the `_down` config, so a separate down
config (and its `USE_TMA`) can only reach SGLang's kernel through a file. `ConfigFolder` writes the configs
under test as the two files SGLang's own `get_moe_configs` reads, in a temporary folder that
`SGLANG_MOE_CONFIG_DIR` points at while the kernel runs, and clears SGLang's lookup cache when they change.

Facts from SGLang 0.5.23 (`sglang/srt/layers/moe/moe_runner/triton_utils/fused_moe_triton_config.py`):
files live in `<SGLANG_MOE_CONFIG_DIR or the module's folder>/configs/triton_<x_y_z>/`; the running Triton's
folder is tried first, then every other `triton_*` folder newest first; a missing `_down` file means the up
configs serve the down GEMM too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.kernels.base import MoeConfigs

CONFIG_DIR_ENV = "SGLANG_MOE_CONFIG_DIR"


def triton_folder(triton_version: str) -> str:
    """'3.5.1' -> 'triton_3_5_1', exactly as SGLang 0.5.23 builds it (dots to underscores, nothing else)."""
    return "triton_" + triton_version.replace(".", "_")


def _version_key(folder: str) -> tuple[int, ...]:
    parts = folder.removeprefix("triton_").split("_")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        return ()


def locate_config_file(config_dir: str | Path, file_name: str, triton_version: str) -> Path | None:
    """The file SGLang 0.5.23 loads for `file_name` under `config_dir` (the folder holding `configs/`): the running
    Triton's folder, else the newest other `triton_*` folder that has it; None when none has it."""
    root = Path(config_dir) / "configs"
    exact = root / triton_folder(triton_version) / file_name
    if exact.is_file():
        return exact
    if not root.is_dir():
        return None
    folders = sorted((d.name for d in root.iterdir() if d.is_dir() and d.name.startswith("triton_")),
                     key=_version_key, reverse=True)
    for folder in folders:
        candidate = root / folder / file_name
        if candidate.is_file():
            return candidate
    return None


@dataclass
class ConfigFolder:
    """A private `SGLANG_MOE_CONFIG_DIR` holding exactly the configs under test.

    `file_name(down)` is the engine's own `get_config_file_name` for the shape (it embeds the running device's
    name); `clear_cache` is the engine's `get_moe_configs.cache_clear`. One instance per process.
    """

    triton_version: str
    file_name: Callable[[bool], str]
    clear_cache: Callable[[], None]
    _root: Path | None = None
    _installed: tuple[str, int] | None = None

    def _folder(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="tuner-moe-configs-"))
        folder = self._root / "configs" / triton_folder(self.triton_version)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def install(self, configs: MoeConfigs, batch_size: int) -> None:
        """Make the folder hold `configs` (at `batch_size`, the only key, so any M finds it) and nothing else."""
        if self._installed == (configs.key, batch_size):
            return
        folder = self._folder()
        files = {self.file_name(False): configs.up}
        if configs.down is not None:
            files[self.file_name(True)] = configs.down
        for old in folder.iterdir():
            if old.name not in files:
                old.unlink()
        for name, config in files.items():
            (folder / name).write_text(json.dumps({str(batch_size): config.to_json_dict()}))
        self.clear_cache()
        self._installed = (configs.key, batch_size)

    @contextlib.contextmanager
    def serving(self, configs: MoeConfigs, batch_size: int) -> Iterator[None]:
        """While inside, the engine's lookup finds `configs` (and only them)."""
        self.install(configs, batch_size)
        assert self._root is not None
        old = os.environ.get(CONFIG_DIR_ENV)
        os.environ[CONFIG_DIR_ENV] = str(self._root)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(CONFIG_DIR_ENV, None)
            else:
                os.environ[CONFIG_DIR_ENV] = old

    def forget(self, file_name: Callable[[bool], str] | None = None) -> None:
        """Clear the engine's lookup cache and what is installed (for another shape: its `file_name`), so the
        next lookup reads files again."""
        if file_name is not None:
            self.file_name = file_name
        self.clear_cache()
        self._installed = None

    @contextlib.contextmanager
    def users_lookup(self) -> Iterator[None]:
        """While inside, the engine's lookup is the user's own (their SGLANG_MOE_CONFIG_DIR or the shipped files)."""
        self.forget()
        try:
            yield
        finally:
            self.clear_cache()

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            self._installed = None


def read_json_configs(path: Path) -> dict[int, dict[str, Any]]:
    """An engine config file as {M: entry}; top-level keys that are not batch sizes are skipped."""
    data = json.loads(path.read_text())
    return {int(k): v for k, v in data.items() if k.isdigit() and isinstance(v, dict)}

"""Test-session setup: no GPU here, so Triton kernels run in the interpreter (must be set before import)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import sys

import pytest


@pytest.fixture(autouse=True)
def _forget_fake_engines():
    """Fake engine packages a test imported must not outlive it (sys.modules keeps submodules otherwise)."""
    yield
    for name in [n for n in sys.modules if n.split(".")[0] in ("sglang", "vllm")]:
        if sys.modules[name] is not None:
            del sys.modules[name]

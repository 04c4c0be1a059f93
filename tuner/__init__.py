"""tuner: an observability-driven autotuner for LLM inference serving.

Kernel sweeps (fused-MoE Triton configs), server-flag search, and the service around them.
"""

__version__ = "0.1.0"

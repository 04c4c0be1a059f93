"""Triton kernels whose launch configs the tuner searches, with their torch references."""

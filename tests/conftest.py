"""Shared test configuration: float32 CPU JAX, small and deterministic."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

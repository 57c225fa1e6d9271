"""Fused kernels: the shared contract (spec.py, checks.py) and one launcher module per backend."""

"""Triton kernels, one op per file: reference (from kernels/spec.py) -> kernel -> launcher."""

"""Benchmark machinery shared by the CLI and benchmarks/: workloads, timing, machine records."""

"""Per-op kernels: each op has a spec (arguments -> Problem), a NumPy reference and backends."""

"""Benchmark commands (``mst bench ...``): measurements that print figures, never tests."""

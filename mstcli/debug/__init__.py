"""Diagnostic commands (``mst debug ...``): measurements that explain a run's numbers, never tests."""

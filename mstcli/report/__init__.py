"""Figures of a run (matplotlib, Agg backend: no display needed) for ``mst report`` and ``mst compare``."""

"""mst: cross-modal knowledge distillation by MST-Distill, from the command line."""

__version__ = "0.1.0"

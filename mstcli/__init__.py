"""mst: cross-modal knowledge distillation by MST-Distill, as a CLI.

The package is layered, lowest first; a module imports its own layer and those below, never one above (lazy
imports inside functions included; tests/test_import_graph.py holds the table and checks it, with no cycles):

    errors, config, ui, atomic_write -> data -> engine -> models -> methods -> report -> stages
    -> benchmarks, debug -> cli

``engine`` runs epochs, checkpoints and resumes without knowing a net or a method; ``methods`` holds the task
kinds, the losses, MST-Distill's S2/S3 parts and the comparison methods; ``report`` renders results (figures,
terminal tables); ``stages`` has one module per command. ``standalone`` is shipped with an export and imports
nothing of mstcli.
"""

__version__ = "0.1.0"

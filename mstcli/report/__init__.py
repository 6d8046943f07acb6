"""How results are shown: ``figures`` draws the PNGs of ``mst report`` and ``mst compare`` (matplotlib, Agg
backend: no display needed), ``tables`` the terminal's Rich tables of ``mst eval``, ``predict`` and ``compare``.

Rendering only, below the stages that use it: the ``mst report`` command itself (reading a run's results, writing
report.md with these figures) is a stage like every command, stages/report.py.
"""

"""Grids of runs on more than one process or machine: the benchmark matrix (``mst bench accuracy``) and settings
sweeps (``mst sweep``), submitted through submitit to a local pool of processes, to SLURM, or run one after
another in this process (``debug``).

A grid is a list of :class:`~mstcli.experiments.jobs.Job` objects, each a few ``mst`` command lines and the jobs
it waits for; an executor (``executors.py``) runs them and reports each job's outcome. What the jobs are comes
from elsewhere: the DVC stages of ``bench/dvc.yaml`` (``dvc_stages.py``), or a sweep's grid (``sweep.py``).
"""

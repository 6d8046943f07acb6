"""``python -m mstcli`` (what ``torchrun -m mstcli`` runs) is the same as the ``mst`` command."""

from mstcli.cli import main

main()

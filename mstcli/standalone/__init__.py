"""Files that ``mst export`` copies into an export folder. They must not import mstcli: they run without it."""

"""A user's own folder of paired files: its metadata table (table.py), what each kind of file becomes (kinds.py)
and the worker processes that decode it (decoding.py). The data set itself is mstcli/data/sources/folder.py."""

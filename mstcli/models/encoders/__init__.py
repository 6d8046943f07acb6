"""Encoders a user chooses in ``models`` (torchvision, Hugging Face, their own factory, or mst's own).

Every encoder maps the stored tensor of one modality, a batch at a time, to one vector per sample; the nets of
models/chosen.py put a linear classifier (student, CM teacher) or a fusion head (MM teacher) on top. The
registry (registry.py) names a builder per kind of ``models`` setting, so a new kind is one module and one line.
"""

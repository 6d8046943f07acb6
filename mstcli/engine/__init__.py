"""The training machinery shared by the stages: device and seeding, whole-split tensors, atomic outputs."""

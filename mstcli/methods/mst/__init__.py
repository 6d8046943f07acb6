"""MST-Distill itself (the paper's method): S1's mutual loss, S2's MaskNets and masked teachers, S3's
specialized teachers, router, losses and weight decay. The comparison methods live in ``methods/baselines``."""

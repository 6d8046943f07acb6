"""Networks: the backbones of each data set family, the MaskNet plug-in and the GateNet router."""

"""Data: the HDF5 feature store, the split protocol, feature extractors and one source module per data set."""

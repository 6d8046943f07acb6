"""The comparison methods: one module per method, each a subclass of ``methods.base.DistillMethod``."""

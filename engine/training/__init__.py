"""Fitting a model: the configuration, the trainer, the frozen-feature caches and the metrics."""

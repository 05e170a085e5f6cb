"""Backbones: the catalog and its offline weights, the layer tree with its freeze presets, checkpoints."""

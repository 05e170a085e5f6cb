"""TransferLab engine: datasets, models, training, evaluation and export. Plain Python + torch, no Qt."""

__version__ = "0.1.0"

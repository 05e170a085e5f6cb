"""Choosing for the user: how well each pretrained backbone fits the data (LogME, cross-validated linear
probes) and a search over training recipes within a time budget."""

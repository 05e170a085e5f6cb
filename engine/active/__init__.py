"""Unlabelled samples: what to label next (engine.active.acquire)."""

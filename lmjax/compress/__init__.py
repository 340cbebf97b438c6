"""Smaller models (docs/compression.md): structured pruning, the compression report."""

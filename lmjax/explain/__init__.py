"""Explanations of a run's predictions (docs/explain.md): attributions, attention maps, LIME."""

"""Adversarial robustness (docs/robustness.md): FGSM and PGD attacks, batched and jitted."""

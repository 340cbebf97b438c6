"""Privacy (docs/privacy.md): DP-SGD and its accountant, canary exposure, membership inference."""

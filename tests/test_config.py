"""Configs stored by older runs load in today's shape."""

from lmjax.config import from_stored, load_config, validate


def test_a_config_stored_before_newer_sections_and_fields_loads_and_validates():
    stored = load_config("configs/fashion_mnist.py:tiny").to_dict()
    for section in ("federated", "privacy", "prune"):
        del stored[section]
    del stored["robust"]["eps"]
    del stored["checkpoint"]["restore_step"]
    cfg = from_stored(stored)
    validate(cfg)
    assert cfg.federated.clients_at_once == "vmap" and cfg.privacy.dp is False
    assert cfg.robust.eps == 0.1 and cfg.checkpoint.restore_step == -1
    assert cfg.model.channels == (8, 16)  # what the run stored is kept

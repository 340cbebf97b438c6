"""Configs stored by older runs load in today's shape; a config carries only the sections it
uses, and a training switch adds its own."""

import ml_collections
import pytest

from lmjax.config import from_stored, load_config, validate
from lmjax.tasks import SWITCHES, add_switches, check


def test_a_config_stored_before_newer_sections_and_fields_loads_and_validates():
    stored = load_config("configs/fashion_mnist.py:tiny").to_dict()
    del stored["log"]
    del stored["train"]["patience"]
    del stored["checkpoint"]["restore_step"]
    cfg = from_stored(stored)
    validate(cfg)
    assert cfg.log.tensorboard is True and cfg.train.patience == 0
    assert cfg.checkpoint.restore_step == -1
    assert cfg.model.channels == (8, 16)  # what the run stored is kept


def test_a_config_stored_when_every_config_carried_every_switch_loads():
    """Before switches owned their sections, every config held all of them (switched off), and
    a federated section with its own rounds: they load, off; the old federated section is not
    taken for a federated run."""
    stored = load_config("configs/fashion_mnist.py:tiny").to_dict()
    stored["federated"] = {"clients": 100, "rounds": 100, "eval_every": 5, "dp_clip": 0.0}
    stored["privacy"] = {"dp": False, "clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}
    stored["robust"] = {"attack": "", "eps": 0.1, "steps": 7}  # no step_size yet
    cfg = from_stored(stored)
    assert "federated" not in cfg
    check(cfg)
    assert cfg.privacy.target_epsilon == 0.0 and cfg.robust.step_size == 0.0


def test_a_gpt_config_carries_no_switch_and_a_plus_adds_one():
    plain = load_config("configs/gpt.py")
    assert not set(SWITCHES) & set(plain.keys())
    assert sorted(plain.keys()) == ["checkpoint", "compilation_cache", "data", "distributed",
                                    "init_from", "log", "mesh", "model", "optim", "sample",
                                    "seed", "task", "train"]
    pruned = load_config("configs/gpt.py:tiny+prune+distill")
    assert {"prune", "distill"} <= set(pruned.keys()) and pruned.train.num_steps == 20
    assert pruned.prune.target_sparsity == 0.0  # off until a field turns it on
    assert "federated" in load_config("configs/gpt.py:fedavg")
    with pytest.raises(ValueError, match="'nope' is not a training switch"):
        load_config("configs/gpt.py:tiny+nope")


def test_dp_settings_are_one_section_for_dp_sgd_and_dp_fedavg():
    sgd = add_switches(load_config("configs/fashion_mnist.py:tiny"), "privacy")
    fedavg = add_switches(load_config("configs/fashion_mnist.py:fedavg"), "privacy")
    assert sgd.privacy.to_dict() == fedavg.privacy.to_dict()
    assert not any("dp" in key for key in fedavg.federated.keys())


def test_each_switch_checks_its_own_section():
    cfg = add_switches(load_config("configs/fashion_mnist.py:tiny"), *SWITCHES)
    del cfg["federated"]  # federated training is on whenever its section is there
    check(cfg)
    for field, value, message in [("prune.target_sparsity", 1.5, "prune.target_sparsity"),
                                  ("robust.attack", "cw", "robust.attack"),
                                  ("ensemble.members", 0, "ensemble.members"),
                                  ("distill.alpha", 2.0, "distill.alpha"),
                                  ("lora.targets", "nope", "lora.targets"),
                                  ("privacy.dp", True, "batch norm")]:
        bad = ml_collections.ConfigDict(cfg.to_dict())
        section, key = field.split(".")
        bad[section][key] = value
        with pytest.raises(ValueError, match=message):
            check(bad)

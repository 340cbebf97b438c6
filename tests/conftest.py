"""Test-wide set-up: 8 simulated CPU devices, offline hubs, and small shared fixtures."""

import os

# Before JAX starts: 8 CPU devices stand in for a pod slice in the sharding tests.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")

import runpy  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_config(preset: str = "tiny", config_file: str = "gpt.py"):
    return runpy.run_path(str(ROOT / "configs" / config_file))["get_config"](preset)


@pytest.fixture(scope="session", name="load_config")
def load_config_fixture():
    return load_config


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> str:
    """One prepared-data cache for the whole session (preparing Shakespeare takes ~0.5 s)."""
    return str(tmp_path_factory.mktemp("data_cache"))


@pytest.fixture
def tiny_config(data_cache):
    c = load_config("tiny")
    c.data.cache_dir = data_cache
    c.log.tensorboard = False
    return c

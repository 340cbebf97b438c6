"""Test-wide set-up: 8 simulated CPU devices, offline hubs, and small shared fixtures."""

import os

# Before JAX starts: 8 CPU devices stand in for a pod slice in the sharding tests.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from lmjax import config as lmjax_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_config(preset: str = "tiny", config_file: str = "gpt.py"):
    return lmjax_config.load_config(f"{ROOT / 'configs' / config_file}:{preset}")


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


def write_idx(path, array):
    """An IDX file as Fashion-MNIST ships them (gzip, big-endian header)."""
    import gzip

    import numpy as np
    array = np.asarray(array, np.uint8)
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory) -> str:
    """Small Fashion-MNIST-shaped IDX files: 600 training and 200 test images of 28x28 in
    which each class is a square of its own brightness on noise, so a model can learn them."""
    import numpy as np
    d = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 600), ("t10k", 200)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, y in enumerate(labels):
            images[i, 6:22, 6:22] = 60 + 19 * y
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return str(d)

"""Run tracking: TensorBoard events read back, images, Weights & Biases offline, run_info.json."""

import glob
import io
import json
import os
import struct
import subprocess
import sys

import jax
import matplotlib.image
import numpy as np
import pytest

from lmjax.config import ConfigError
from lmjax.train.logging import MetricLogger
from lmjax.train.loop import train_and_evaluate


def read_events(logdir) -> list:
    """Every Event in the TFRecord files under logdir (length, crc, payload, crc per record)."""
    from tensorboardX.proto import event_pb2
    events = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        data, i = open(path, "rb").read(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            events.append(event)
            i += 12 + n + 4
    return events


def scalars(events) -> dict:
    out = {}
    for e in events:
        for v in e.summary.value:
            if v.HasField("simple_value"):
                out[(v.tag, e.step)] = v.simple_value
    return out


@pytest.mark.slow
def test_a_run_writes_scalars_samples_and_run_info(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.mesh.data = 1
    cfg.log.tensorboard = True
    cfg.train.update(num_steps=10, log_every=5, eval_every=5, final_eval_examples=16)
    cfg.sample.update(num_samples=1, max_new_tokens=8)
    train_and_evaluate(cfg, str(tmp_path))

    events = read_events(tmp_path / "tensorboard")
    logged = scalars(events)
    tags = {tag for tag, _ in logged}
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "val/loss",
            "val/accuracy"} <= tags
    # TensorBoard holds the same numbers as metrics.jsonl.
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k, v in r.items():
            if k not in ("step", "split", "time"):
                assert logged[(f"{r['split']}/{k}", r["step"])] == pytest.approx(v, rel=1e-6)
    assert all(np.isfinite(v) and v > 0 for (t, _), v in logged.items() if t == "train/grad_norm")
    texts = [v for e in events for v in e.summary.value if v.tag.startswith("sample_0")]
    assert texts and texts[0].tensor.string_val[0].decode().strip()

    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["config"] == cfg.to_dict()
    assert info["libraries"]["jax"] == jax.__version__
    assert info["devices"] == {"platform": "cpu", "kind": jax.devices()[0].device_kind,
                               "count": jax.device_count(), "processes": 1}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(__file__),
                          capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the commit is the one the code runs from
        assert info["git"]["commit"] == head.stdout.strip()
    assert len(info["sessions"]) == 1


def test_images_go_to_tensorboard_as_png(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    logger = MetricLogger(str(tmp_path), tensorboard=True, echo=lambda s: None)
    logger.image(3, "val/confusion_matrix", rgb)
    logger.image(4, "grey", grey)
    with pytest.raises(ValueError, match=r"expected \(H, W, C\) uint8"):
        logger.image(5, "bad", rgb.astype(np.float32))
    logger.close()
    images = {v.tag: v.image for e in read_events(tmp_path / "tensorboard")
              for v in e.summary.value if v.HasField("image")}
    assert (images["val/confusion_matrix"].height, images["val/confusion_matrix"].width) == (5, 7)
    decoded = matplotlib.image.imread(io.BytesIO(images["val/confusion_matrix"].encoded_image_string))
    np.testing.assert_array_equal(np.round(decoded * 255).astype(np.uint8), rgb)
    decoded = matplotlib.image.imread(io.BytesIO(images["grey"].encoded_image_string))
    for channel in np.moveaxis(decoded[..., :3], -1, 0):  # grey is stored as equal RGB
        np.testing.assert_array_equal(np.round(channel * 255).astype(np.uint8), grey)


def _wandb_config(tiny_config, mode="offline"):
    cfg = tiny_config
    cfg.log.wandb, cfg.log.wandb_project, cfg.log.wandb_mode = True, "lmjax-test", mode
    return cfg


@pytest.mark.slow
def test_wandb_offline_run_records_metrics_and_resumes(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="Weights & Biases is optional (the test extra has it)")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _wandb_config(tiny_config)
    for step in (1, 2):  # the second logger is a resumed run: the same W&B run continues
        logger = MetricLogger.for_run(cfg, str(tmp_path), echo=lambda s: None)
        logger.write(step, "train", {"loss": 1.5 / step, "grad_norm": 0.25})
        logger.text(step, "sample_0", "To be <or> not")
        logger.image(step, "val/confusion_matrix", np.zeros((4, 4, 3), np.uint8))
        logger.close()
    run_id = (tmp_path / "wandb_run_id").read_text()
    runs = glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    assert len(runs) == 2
    data = b"".join(open(r, "rb").read() for r in runs)
    for key in (b"train/loss", b"train/grad_norm", b"sample_0", b"val/confusion_matrix",
                b"lmjax-test"):
        assert key in data, key


def test_wandb_asked_for_but_missing_or_misconfigured(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(ConfigError, match=r"log.wandb=True needs the wandb package: pip install"):
        MetricLogger.for_run(_wandb_config(tiny_config), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="log.wandb_mode='cloud': use one of online"):
        MetricLogger.for_run(_wandb_config(tiny_config, mode="cloud"), str(tmp_path / "b"))

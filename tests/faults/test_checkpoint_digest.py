"""The checkpoint digest on its own (no training): recorded at save, checked at restore, with
either hash; checkpoints without one still restore; a failed save names its step."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lmjax import checkpoint as ckptlib
from lmjax.checkpoint import Checkpointer, CheckpointError


def _state():
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.standard_normal((256, 256), dtype=np.float32)),
            "b": jnp.asarray(rng.standard_normal(300), dtype=jnp.bfloat16),
            "step": jnp.asarray(7, jnp.int32)}


def _restore(ckpt, step, like):
    shardings = jax.tree.map(lambda x: x.sharding, like)
    return ckpt.restore(step, like, shardings)


def flip_largest(state_dir, n: int = 64) -> str:
    """Inverts `n` bytes in the middle of the largest file under `state_dir`, keeping its size."""
    files = [os.path.join(r, f) for r, _, fs in os.walk(state_dir) for f in fs]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    with open(path, "wb") as f:
        f.write(data)
    return path


@pytest.mark.parametrize("algorithm", sorted(ckptlib.HASHES))
def test_flipped_bytes_are_found_and_named_with_either_hash(algorithm, tmp_path, monkeypatch):
    monkeypatch.setattr(ckptlib, "ALGORITHM", algorithm)
    state = _state()
    with Checkpointer(str(tmp_path), keep=5) as ckpt:
        for step in (1, 2):
            ckpt.save(step, state, {"lr": 0.1, "sizes": (1, 2)}, {"best": None}, force=True)
    with Checkpointer(str(tmp_path), keep=5) as ckpt:
        meta = json.load(open(tmp_path / "2" / ckptlib.STEP_METADATA))
        assert meta["custom_metadata"][ckptlib.DIGEST_KEY]["algorithm"] == algorithm
        restored = _restore(ckpt, 2, state)
        np.testing.assert_array_equal(restored["w"], state["w"])
        assert ckpt.stored_config(2) == {"lr": 0.1, "sizes": [1, 2]}
        flip_largest(tmp_path / "2" / "state")
        with pytest.raises(CheckpointError) as e:
            _restore(ckpt, 2, state)
    message = str(e.value)
    assert "\n" not in message
    assert "(step 2) is damaged: the state array ['w'] differs from the digest" in message
    assert "--config.checkpoint.restore_step=1" in message
    assert f"mv {tmp_path / '2'} {tmp_path / '2'}.damaged" in message
    assert (tmp_path / "2" / "state").is_dir()  # left untouched


def test_a_damaged_config_record_is_found(tmp_path):
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(3, _state(), {"lr": 0.1}, force=True)
    path = tmp_path / "3" / "config" / "metadata"
    path.write_text(path.read_text().replace("0.1", "0.7"))  # same size, still valid JSON
    with Checkpointer(str(tmp_path)) as ckpt, \
            pytest.raises(CheckpointError, match="its config record .* differs"):
        ckpt.stored_config(3)


def test_checkpoint_without_digest_restores_with_one_note(tmp_path, capsys):
    """As lmjax wrote them before digests: no custom metadata."""
    state = _state()
    manager = ocp.CheckpointManager(str(tmp_path), item_names=("state", "config", "progress"))
    for step in (1, 2):
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave({}),
            progress=ocp.args.JsonSave({})))
    manager.wait_until_finished()
    manager.close()
    with Checkpointer(str(tmp_path)) as ckpt:
        for step in (2, 1, 2):
            np.testing.assert_array_equal(_restore(ckpt, step, state)["w"], state["w"])
    err = capsys.readouterr().err
    assert err.count("lmjax: note:") == 1
    assert "written before lmjax recorded content digests" in err


def test_missing_step_metadata_is_damage_not_an_old_checkpoint(tmp_path):
    state = _state()
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(5, state, {}, force=True)
    os.remove(tmp_path / "5" / ckptlib.STEP_METADATA)
    with Checkpointer(str(tmp_path)) as ckpt, pytest.raises(
            CheckpointError, match=r"step 5\) is damaged: its metadata file _CHECKPOINT_METADATA"
            r", which holds the digest, is missing.*no earlier checkpoint"):
        _restore(ckpt, 5, state)


# With LMJAX_DEBUG=1, TensorStore's callbacks into Orbax's closed event loop are let through.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "LMJAX_DEBUG"])
def test_a_failed_save_names_its_step_and_keeps_the_earlier_ones(debug, small_disk, caplog,
                                                                 monkeypatch):
    """On a real full disk. Step 2's asynchronous save fails in Orbax's background threads, and
    is reported once, when step 3 waits for it: Orbax's own reports (a traceback from each of its
    threads) are dropped, unless LMJAX_DEBUG=1 asks for them."""
    if debug:
        monkeypatch.setenv("LMJAX_DEBUG", "1")
    state = _state()
    directory = small_disk.path / "checkpoints"
    with pytest.raises(CheckpointError) as e:
        with Checkpointer(str(directory)) as ckpt:
            free = small_disk.available()
            ckpt.save(1, state, {}, force=True)
            ckpt.wait()
            small_disk.leave((free - small_disk.available()) // 2)  # half a checkpoint's room
            ckpt.save(2, state, {}, force=True)  # asynchronous: fails in the background
            ckpt.save(3, state, {}, force=True)  # waits for step 2 first
    message = str(e.value)
    assert "\n" not in message
    assert "Saving the checkpoint of step 2" in message and "No space left on device" in message
    assert "(latest: step 1)" in message
    orbax_errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert bool(orbax_errors) == debug
    small_disk.release()
    with Checkpointer(str(directory)) as ckpt:
        assert ckpt.all_steps() == [1]
        np.testing.assert_array_equal(_restore(ckpt, 1, state)["w"], state["w"])


def test_set_aside_renames_later_steps_and_deletes_nothing(tmp_path):
    state = _state()
    with Checkpointer(str(tmp_path), keep=5) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, state, {}, force=True)
        ckpt.wait()
        os.makedirs(tmp_path / "3.set-aside")  # from an earlier rewind
        moved = ckpt.set_aside_after(1)
        assert sorted(moved) == [str(tmp_path / "2.set-aside"), str(tmp_path / "3.set-aside-2")]
        assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
        ckpt.save(2, state, {}, force=True)  # the resumed run saves its own step 2
    assert sorted(os.listdir(tmp_path)) == ["1", "2", "2.set-aside", "3.set-aside",
                                            "3.set-aside-2"]


def test_an_uncompressed_save_restores_as_any_checkpoint(tmp_path):
    """compress=False (imports: Orbax would hold the compressed bytes in memory) writes the
    arrays' own bytes, which a default Checkpointer restores and verifies."""
    state = {**_state(), "ones": jnp.ones((512, 512))}  # 1 MB that zstd makes a few bytes
    sizes = {}
    for compress in (True, False):
        with Checkpointer(str(tmp_path / str(compress)), compress=compress) as ckpt:
            ckpt.save(1, state, {}, force=True)
        sizes[compress] = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in
                              os.walk(tmp_path / str(compress) / "1" / "state") for f in fs)
    assert sizes[True] < 2**19 < 2**20 < sizes[False]
    with Checkpointer(str(tmp_path / "False")) as ckpt:
        restored = _restore(ckpt, 1, state)
    for k in state:
        np.testing.assert_array_equal(restored[k], state[k])

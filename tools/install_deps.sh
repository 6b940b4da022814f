#!/usr/bin/env bash
# Install the OpenMMLab stack mmdistill runs on, then mmdistill itself (editable), at the exact
# versions CI tests (requirements/ci-constraints.txt; setup.py declares only supported ranges):
# torch + torchvision, mmcv (built from its sdist with ops, cached as a wheel under
# $MMDISTILL_WHEEL_CACHE), then mmdistill[all]: mmengine, mmdet, mmsegmentation, mmpretrain;
# matplotlib and pytest for the tools and tests.
# Idempotent: a second run installs nothing new and takes seconds.
set -euo pipefail
PY=${PYTHON:-python3}
CACHE=${MMDISTILL_WHEEL_CACHE:-$HOME/.cache/mmdistill/wheels}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONSTRAINTS="$ROOT/requirements/ci-constraints.txt"
PIP="$PY -m pip install -q --disable-pip-version-check -c $CONSTRAINTS"
mkdir -p "$CACHE"

pin() { sed -n "s/^$1==//p" "$CONSTRAINTS"; }  # the version CI pins for a distribution
TORCH=$(pin torch); TORCHVISION=$(pin torchvision); MMCV=$(pin mmcv)

have() { $PY - "$@" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split('==')
    if version(name) != want:
        sys.exit(1)
PYEOF
}

log() { echo "[install_deps] $*"; }

if ! have torch==$TORCH torchvision==$TORCHVISION; then
  log "torch $TORCH + torchvision $TORCHVISION"
  $PIP torch torchvision
fi
# mmcv's setup.py imports pkg_resources; numpy<2 and opencv<4.11 keep the 2023 stack happy
# (their versions: the constraints file).
$PIP setuptools wheel ninja numpy opencv-python

if ! have mmcv==$MMCV; then
  whl=$(ls "$CACHE"/mmcv-$MMCV-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "building mmcv $MMCV with ops from its sdist (about 13 min on 2 cores); cached in $CACHE"
    tmp=$(mktemp -d)
    $PY -m pip download -q --no-deps --no-binary :all: mmcv==$MMCV -d "$tmp"
    tar -xzf "$tmp"/mmcv-$MMCV.tar.gz -C "$tmp"
    # torch >= 2.14's headers need C++20.
    if $PY -c "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 14))"; then
      sed -i 's/-std=c++17/-std=c++20/g' "$tmp"/mmcv-$MMCV/setup.py
    fi
    (cd "$tmp"/mmcv-$MMCV && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      $PY -m pip wheel -q --no-deps --no-build-isolation . -w "$CACHE")
    rm -rf "$tmp"
    whl=$(ls "$CACHE"/mmcv-$MMCV-*.whl | head -n1)
  fi
  log "installing $whl"
  $PIP --no-deps "$whl"
  $PIP addict packaging Pillow pyyaml yapf
fi

# mmdistill with all its extras (mmengine, mmdet, mmsegmentation, mmpretrain at CI's versions);
# matplotlib for the tools' charts (study, demo, feature tools), pytest for the tests
$PIP --no-build-isolation -e "$ROOT[all]" matplotlib pytest
log "done"

#!/usr/bin/env bash
# Install the OpenMMLab stack mmdistill runs on, then mmdistill itself (editable).
# torch 2.14.1 + torchvision 0.29.1, mmcv 2.1.0 (built from its sdist with ops, cached as a wheel
# under $MMDISTILL_WHEEL_CACHE), then mmdistill[all]: the mmengine, mmdet, mmsegmentation and
# mmpretrain versions setup.py pins (0.10.7, 3.3.0, 1.2.2, 1.2.0); matplotlib and pytest for the
# tools and tests.
# Idempotent: a second run installs nothing new and takes seconds.
set -euo pipefail
PY=${PYTHON:-python3}
CACHE=${MMDISTILL_WHEEL_CACHE:-$HOME/.cache/mmdistill/wheels}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIP="$PY -m pip install -q --disable-pip-version-check"
mkdir -p "$CACHE"

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

if ! have torch==2.14.1 torchvision==0.29.1; then
  log "torch 2.14.1 + torchvision 0.29.1"
  $PIP torch==2.14.1 torchvision==0.29.1
fi
# mmcv 2.1.0's setup.py imports pkg_resources; numpy<2 and opencv<4.11 keep the 2023 stack happy.
$PIP "setuptools==80.9.0" wheel ninja "numpy<2" "opencv-python<4.11"

if ! have mmcv==2.1.0; then
  whl=$(ls "$CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "building mmcv 2.1.0 with ops from its sdist (about 13 min on 2 cores); cached in $CACHE"
    tmp=$(mktemp -d)
    $PY -m pip download -q --no-deps --no-binary :all: mmcv==2.1.0 -d "$tmp"
    tar -xzf "$tmp"/mmcv-2.1.0.tar.gz -C "$tmp"
    # torch >= 2.14's headers need C++20.
    if $PY -c "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 14))"; then
      sed -i 's/-std=c++17/-std=c++20/g' "$tmp"/mmcv-2.1.0/setup.py
    fi
    (cd "$tmp"/mmcv-2.1.0 && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      $PY -m pip wheel -q --no-deps --no-build-isolation . -w "$CACHE")
    rm -rf "$tmp"
    whl=$(ls "$CACHE"/mmcv-2.1.0-*.whl | head -n1)
  fi
  log "installing $whl"
  $PIP --no-deps "$whl"
  $PIP addict packaging Pillow pyyaml yapf
fi

# mmdistill with all its extras: setup.py pins mmengine, mmdet, mmsegmentation and mmpretrain;
# matplotlib for the tools' charts (study, demo, feature tools), pytest for the tests
$PIP --no-build-isolation -e "$ROOT[all]" matplotlib pytest
log "done"

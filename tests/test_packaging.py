"""Packaging: the extras pin the versions installed here (the tested ones), mmcv is left to
tools/install_deps.sh, and ``import mmdistill`` works without mmdet, mmseg or mmpretrain,
saying what to install only when a wrapper of the missing library is asked for."""
import subprocess
import sys
from importlib.metadata import requires, version

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT


def test_extras_pin_the_installed_versions():
    reqs = [Requirement(r) for r in requires('mmdistill')]
    extras = {}
    for req in reqs:
        for extra in ('det', 'seg', 'cls', 'all'):
            if req.marker is not None and req.marker.evaluate({'extra': extra}):
                extras.setdefault(extra, {})[req.name] = req
    pinned = {'det': 'mmdet', 'seg': 'mmsegmentation', 'cls': 'mmpretrain'}
    for extra, name in pinned.items():
        req = extras[extra][name]
        assert str(req.specifier).startswith('=='), req
        assert version(name) in req.specifier, (name, version(name), req)
        assert name in extras['all']
    core = {r.name: r for r in reqs if r.marker is None}
    assert version('mmengine') in core['mmengine'].specifier
    assert all('mmcv' not in r.name for r in reqs)


MISSING = '''
import sys
sys.modules[{lib!r}] = None  # as if it were not installed
import mmdistill
from mmengine.registry import MODELS
print('imported')
try:
    MODELS.build(dict(type={wrapper!r}))
except ImportError as error:
    print('build:', error)
try:
    from mmdistill.models import {wrapper}
except ImportError as error:
    print('import:', error)
'''


@pytest.mark.parametrize('lib,wrapper,extra', [('mmdet', 'DistillDetector', 'det'),
                                               ('mmseg', 'DistillSegmentor', 'seg'),
                                               ('mmpretrain', 'DistillClassifier', 'cls')])
def test_import_without_a_library(lib, wrapper, extra):
    out = subprocess.run([sys.executable, '-c', MISSING.format(lib=lib, wrapper=wrapper)],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == 'imported'
    hint = f'{wrapper} needs {lib}'
    assert lines[1].startswith('build: ' + hint) and f'mmdistill[{extra}]' in lines[1]
    assert lines[2].startswith('import: ' + hint)

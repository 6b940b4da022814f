"""Packaging: the wheel holds the package, its configs, tools and model index under
``mmdistill/.mim`` (and not the study); its metadata declares the ranges of
``mmdistill/version.py``, which hold the versions CI pins (requirements/ci-constraints.txt) and
the installed ones; the import-time version check names library, version and range; and
``import mmdistill`` works without mmdet, mmseg or mmpretrain, saying what to install only when a
wrapper of the missing library is asked for."""
import glob
import os
import os.path as osp
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib.metadata import version

import pytest
from packaging.requirements import Requirement

from mmdistill.version import MMCV, OPTIONAL, REQUIRED
from tests.conftest import ROOT


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> str:
    """The wheel built from this tree, as a user builds it."""
    out = tmp_path_factory.mktemp('wheel')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                           '--no-build-isolation', ROOT, '-w', str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path, ) = glob.glob(str(out / 'mmdistill-*.whl'))
    return path


def test_wheel_holds_configs_tools_and_model_index(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '*', '*'))}
    assert {f'mmdistill/.mim/{c}' for c in configs} <= names
    assert 'mmdistill/.mim/model-index.yml' in names
    for tool in ('train.py', 'test.py', 'export_student.py', 'dist_train.sh'):
        assert f'mmdistill/.mim/tools/{tool}' in names
    assert not any('/experiments/' in n or n.endswith('demo.py') for n in names)
    assert 'mmdistill/version.py' in names and 'mmdistill/hooks/teacher_eval_hook.py' in names
    # the CPU kernels, compiled on the user's machine
    assert {f'mmdistill/losses/fast/{k}' for k in ('fgd_kernel.cpp', 'cwd_kernel.cpp',
                                                   'cpu_tasks.h', 'cpu_math.h')} <= names


def test_wheel_metadata_declares_the_supported_ranges(wheel):
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA'))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    assert meta['Version'] == version_of_tree()
    assert meta['License'] == 'Apache-2.0' and meta['Requires-Python'] == '>=3.10'
    assert meta.get_payload().startswith('# mmdistill')  # the README
    reqs = [Requirement(r) for r in meta.get_all('Requires-Dist')]
    core = {r.name: str(r.specifier) for r in reqs if r.marker is None}
    assert {k: core[k] for k in REQUIRED} == {k: str(Requirement(k + v).specifier)
                                              for k, v in REQUIRED.items()}
    assert 'mmcv' not in core  # built from its sdist (tools/install_deps.sh)
    for name, (_, extra, spec) in OPTIONAL.items():
        (req, ) = [r for r in reqs if r.name == name and r.marker.evaluate({'extra': extra})]
        assert req.specifier == Requirement(name + spec).specifier


def version_of_tree() -> str:
    namespace: dict = {}
    exec(open(osp.join(ROOT, 'mmdistill', 'version.py')).read(), namespace)
    return namespace['__version__']


def ci_pins() -> dict:
    pins = {}
    with open(osp.join(ROOT, 'requirements', 'ci-constraints.txt')) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line:
                req = Requirement(line)
                pins[req.name] = str(req.specifier)[2:]
    return pins


def test_ci_pins_and_installed_versions_are_in_the_ranges():
    ranges = {**REQUIRED, **MMCV, **{k: spec for k, (_, _, spec) in OPTIONAL.items()}}
    pins = ci_pins()
    for name, spec in ranges.items():
        assert pins[name] in Requirement(name + spec).specifier, (name, pins[name], spec)
        installed = version(name).split('+')[0]
        assert installed in Requirement(name + spec).specifier, (name, installed, spec)


CHECK = '''
import importlib.metadata as md
real = md.version
md.version = lambda name: {fake!r}.get(name) or real(name)
import mmdistill
print('imported', mmdistill.__version__)
'''


@pytest.mark.parametrize('fake,message', [
    ({'mmengine': '0.9.1'}, 'supports mmengine>=0.10.0,<0.11.0, but mmengine 0.9.1 is installed'),
    ({'torch': '2.1.0'}, 'supports torch>=2.4,<3, but torch 2.1.0 is installed'),
    ({'mmcv': '2.2.0'}, 'supports mmcv>=2.0.0,<2.2.0, but mmcv 2.2.0 is installed'),
])
def test_version_check_raises_naming_library_version_and_range(fake, message):
    out = subprocess.run([sys.executable, '-c', CHECK.format(fake=fake)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0 and 'ImportError' in out.stderr
    assert message in out.stderr
    skipped = subprocess.run([sys.executable, '-c', CHECK.format(fake=fake)], cwd=ROOT,
                             capture_output=True, text=True,
                             env=dict(os.environ, MMDISTILL_SKIP_VERSION_CHECK='1'))
    assert skipped.returncode == 0 and 'imported' in skipped.stdout
    assert message in skipped.stderr  # as a warning


def test_wrapper_of_a_library_out_of_range_says_why():
    code = CHECK.format(fake={'mmdet': '3.1.0'}) + '''
from mmengine.registry import MODELS
try:
    MODELS.build(dict(type='DistillDetector'))
except ImportError as error:
    print('build:', error)
'''
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'supports mmdet>=3.3.0,<3.4.0, but mmdet 3.1.0 is installed' in out.stdout


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

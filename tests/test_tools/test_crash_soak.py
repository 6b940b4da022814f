"""tools/analysis/crash_soak.py --quick: 3 SIGKILLs (during a step, a checkpoint write and
validation) of a short CIFAR-10 distillation run, each resumed; the final weights equal the
uninterrupted run's bit for bit."""
import os.path as osp

import pytest

from tests.conftest import SHARED_DATA
from tests.test_tools.test_pipeline import run


def test_crash_soak_quick(tmp_path):
    pytest.importorskip('mmpretrain')
    if not osp.isdir(osp.join(SHARED_DATA, 'cifar10')):
        pytest.skip('needs ../shared/data/cifar10')
    out = run('tools/analysis/crash_soak.py', '--quick', '--work-dir', str(tmp_path))
    assert 'result: PASS (final weights bit-identical to the uninterrupted run)' in out
    for point in ('checkpoint', 'validation', 'step'):
        assert f'  {point}  ' in out

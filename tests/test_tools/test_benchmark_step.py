"""tools/analysis/benchmark_step.py runs (quick mode: the tiny test config, 1 repeat)."""
import os.path as osp

import pytest

from tests.conftest import ROOT
from tests.test_tools.test_pipeline import run

pytest.importorskip('mmdet')


@pytest.mark.parametrize('keep', [False, True])
def test_benchmark_step_quick(keep):
    out = run('tools/analysis/benchmark_step.py',
              osp.join(ROOT, 'tests', 'data', 'fgd_retinanet_tiny_coco-tiny.py'),
              '--repeats', '1', '--warmup', '1', '--random-teacher', '--shape', '64', '96',
              *(['--keep-freed-memory'] if keep else []))
    if keep:
        assert 'allocator: freed memory kept' in out and 'heap in use growth' in out, out[-2000:]
    else:
        assert "allocator: the system's malloc" in out and 'RSS growth' in out, out[-2000:]
    # 'auto' names what it picked on this machine (bf16 or fp32), the machine line says why
    fast = "'auto': bf16 + channels-last" if 'bf16 native' in out else "'auto': fp32"
    for row in ('(a) student step', '(b) teacher forward to taps', f"(b') teacher forward, {fast}",
                '(c) distillation step, fp32', f'(d) distillation step, teacher {fast}',
                '(e) distillation step, both fast', 'teacher weights', '| loss_fgd |',
                'torch kernels ', ' cores, torch '):
        assert row in out, out[-2000:]

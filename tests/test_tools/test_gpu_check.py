"""tools/analysis/gpu_check.sh on a machine without CUDA: it skips every part, says so, and
still writes its summary with the machine line."""
import os
import os.path as osp
import subprocess

import pytest
import torch

from tests.conftest import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the run without CUDA')
def test_gpu_check_skips_without_cuda(tmp_path):
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'analysis', 'gpu_check.sh'),
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert 'SKIPPED: no CUDA device' in out and 'not measured' in out, out
    summary = (tmp_path / 'gpu_rows.md').read_text()
    assert 'Machine: CPU ' in summary and 'torch kernels ' in summary, summary
    assert 'SKIPPED: no CUDA device' in summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ['gpu_rows.md']  # no part ran

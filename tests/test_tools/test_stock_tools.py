"""Drop-in: mmdet's, mmseg's and mmpretrain's own ``tools/train.py`` (as pip installs them, under
``<lib>/.mim/tools``) train a distillation config 2 iterations, resume with ``--resume`` to 4, and
log the losses of the uninterrupted run (random augmentation, CPU). Their checkpoints load under
torch's weights-only default once mmdistill is imported, and only then. Their ``tools/test.py``
tests the student of a distillation config without the teacher's checkpoint on disk: it fails at
once naming ``model.skip_teacher=True``, and runs with it."""
import importlib
import json
import os
import re
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, SHARED_DATA
from tests.test_tools.test_pipeline import run

# lib -> (config under tests/data, data folder, module of the registry, losses compared)
CASES = {
    'mmdet': ('fgd_retinanet_tiny_coco-tiny.py', 'coco_tiny',
              ('loss_fgd', 'loss_cls', 'loss_bbox')),
    'mmseg': ('cwd_pspnet_tiny_camvid-mini.py', 'camvid_mini', ('loss_cwd', 'decode.loss_ce')),
    'mmpretrain': ('resume_kd-crd-mgd_cifar10.py', 'cifar10', ('loss_kd', 'loss_crd', 'loss_mgd')),
}
# mmseg's --resume is a flag; mmdet's and mmpretrain's take an optional path ('auto' without)
DUMP = "custom_hooks = [dict(type='DumpLossesHook', digest=True)]\n"


def stock_tool(lib: str, script: str = 'train.py') -> str:
    """The path of ``lib``'s own ``tools/<script>`` as pip installs it."""
    path = osp.join(osp.dirname(importlib.import_module(lib).__file__), '.mim', 'tools', script)
    assert osp.isfile(path), path
    return path


def rows(path):
    with open(path) as f:
        return {r['iter']: r for r in map(json.loads, f)}


@pytest.mark.parametrize('lib', sorted(CASES))
def test_stock_train_py_resumes_exactly(lib, tmp_path):
    from mmengine.config import Config

    from mmdistill.engine.checkpoint import mmengine_checkpoint_globals
    from tests.utils import save_teacher
    config, data, names = CASES[lib]
    pytest.importorskip(lib)
    if not osp.isdir(osp.join(SHARED_DATA, data)):
        pytest.skip(f'needs ../shared/data/{data}')
    base = osp.join(ROOT, 'tests', 'data', config)
    cfg = Config.fromfile(base)
    assert cfg.runner_type == 'DistillRunner'
    teacher = str(tmp_path / 'teacher.pth')
    save_teacher(cfg.model.teacher.config.model, teacher, scope=lib)
    derived = tmp_path / 'config.py'
    derived.write_text(f'_base_ = [{base!r}]\n'
                       "default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2))\n"
                       + ('' if 'DumpLossesHook' in str(cfg.get('custom_hooks')) else DUMP))
    tool = stock_tool(lib)
    opt = ['--cfg-options', f'model.teacher.checkpoint={teacher}']
    straight, parted = str(tmp_path / 'straight'), str(tmp_path / 'parted')
    run(tool, str(derived), '--work-dir', straight, *opt, 'train_cfg.max_iters=4')
    run(tool, str(derived), '--work-dir', parted, *opt, 'train_cfg.max_iters=2')
    log = run(tool, str(derived), '--work-dir', parted, '--resume', *opt, 'train_cfg.max_iters=4')
    assert 'Skipping the 2 trained batches by their indices' in log
    a, b = rows(osp.join(straight, 'losses_rank0.jsonl')), rows(osp.join(parted,
                                                                         'losses_rank0.jsonl'))
    assert sorted(b) == [1, 2, 3, 4]
    for it in (3, 4):
        for name in names:
            assert b[it][name] == pytest.approx(a[it][name], rel=1e-6, abs=0), (it, name)
        assert b[it]['digest'] == a[it]['digest'], it
    # without mmdistill, torch refuses the checkpoint; the types it names are the allowed ones
    ckpt = osp.join(parted, 'iter_2.pth')
    code = ('import sys, torch; print(torch.serialization.get_unsafe_globals_in_checkpoint('
            f'{ckpt!r})); torch.load({ckpt!r}, map_location="cpu")')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert proc.returncode != 0 and 'Weights only load failed' in proc.stderr
    unsafe = set(eval(proc.stdout.strip().splitlines()[-1]))
    allowed = {f'{g.__module__}.{g.__qualname__}' for g in mmengine_checkpoint_globals()}
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in unsafe
    assert unsafe <= allowed, unsafe - allowed
    assert torch.load(ckpt, map_location='cpu')['meta']['iter'] == 2  # mmdistill is imported


# a few test images are enough (CIFAR-10's test split has 10000)
TEST_SUBSET = {'mmpretrain': ['test_dataloader.dataset.indices=8']}


@pytest.mark.parametrize('lib', sorted(CASES))
def test_stock_test_py_without_the_teacher_checkpoint(lib, tmp_path):
    from mmengine.config import Config
    config, data, _ = CASES[lib]
    pytest.importorskip(lib)
    if not osp.isdir(osp.join(SHARED_DATA, data)):
        pytest.skip(f'needs ../shared/data/{data}')
    base = osp.join(ROOT, 'tests', 'data', config)
    cfg = Config.fromfile(base)
    assert not osp.isfile(osp.join(ROOT, cfg.model.teacher.checkpoint))
    student = importlib.import_module(f'{lib}.registry').MODELS
    importlib.import_module(f'{lib}.utils').register_all_modules()
    state = student.build(cfg.model.student).state_dict()
    ckpt = str(tmp_path / 'student_run.pth')
    torch.save({'state_dict': {f'student.{k}': v for k, v in state.items()}}, ckpt)
    tool = stock_tool(lib, 'test.py')
    args = [sys.executable, tool, base, ckpt, '--work-dir', str(tmp_path / 'test'),
            '--cfg-options', 'randomness.seed=0', *TEST_SUBSET.get(lib, [])]
    failed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert failed.returncode != 0
    assert 'teacher checkpoint' in failed.stderr and 'model.skip_teacher=True' in failed.stderr
    log = run(*args[1:], 'model.skip_teacher=True')
    assert re.search(r'(Epoch|Iter)\(test\) \[\d+/\d+\]', log), log[-2000:]

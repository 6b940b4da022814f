"""Resume with nothing lost: a run stopped after 3 iterations and resumed with --resume logs the
same losses at iterations 4..8 as the uninterrupted run, and trains to the same weights (student,
MGD generation blocks, FGD GcBlocks, CTKD temperature, CRD memory banks, optimizer, scheduler and
the RNG that draws MGD's masks and CRD's negatives; the measurement of an ``auto_weight`` stopped
half-way and its weight). Real data, CPU, deterministic pipelines."""
import json
import os.path as osp

import pytest
import torch

from tests.conftest import ROOT, SHARED_DATA
from tests.test_tools.test_pipeline import run

CLS_LOSSES = ('loss_kd', 'loss_dkd', 'loss_ctkd', 'loss_crd', 'loss_mgd')
#: (config, scope, data, losses compared, extra --cfg-options)
CASES = {
    'det': ('resume_fgd-mgd_coco-tiny.py', 'mmdet', 'coco_tiny',
            ('loss_fgd', 'loss_mgd', 'loss_cls', 'loss_bbox'), ()),
    'cls': ('resume_kd-crd-mgd_cifar10.py', 'mmpretrain', 'cifar10', CLS_LOSSES, ()),
    # KD's weight measured over 5 iterations: the run stops after 3, mid-measurement
    'cls_auto_weight': ('resume_kd-crd-mgd_cifar10.py', 'mmpretrain', 'cifar10', CLS_LOSSES,
                        ('model.distill_losses.kd.auto_weight.share=0.25',
                         'model.distill_losses.kd.auto_weight.iters=5')),
}


def rows(path):
    with open(path) as f:
        return {r['iter']: r for r in map(json.loads, f)}


@pytest.mark.parametrize('case', sorted(CASES))
def test_resumed_run_equals_straight_run(case, tmp_path):
    from mmengine.config import Config

    from tests.utils import save_teacher
    config, scope, data, names, extra = CASES[case]
    pytest.importorskip(scope)
    if not osp.isdir(osp.join(SHARED_DATA, data)):
        pytest.skip(f'needs ../shared/data/{data}')
    config = osp.join(ROOT, 'tests', 'data', config)
    teacher = str(tmp_path / 'teacher.pth')
    save_teacher(Config.fromfile(config).model.teacher.config.model, teacher, scope=scope)
    opts = (f'model.teacher.checkpoint={teacher}', ) + extra
    straight, parted = str(tmp_path / 'straight'), str(tmp_path / 'parted')
    run('tools/train.py', config, '--work-dir', straight, '--cfg-options', *opts)
    run('tools/train.py', config, '--work-dir', parted, '--cfg-options', *opts,
        'train_cfg.max_iters=3')
    log = run('tools/train.py', config, '--work-dir', parted, '--resume', '--cfg-options', *opts)
    assert 'resumed' in log.lower()
    a, b = rows(osp.join(straight, 'losses_rank0.jsonl')), rows(osp.join(parted,
                                                                         'losses_rank0.jsonl'))
    assert sorted(b) == list(range(1, 9))
    for it in range(4, 9):
        for name in names:
            assert b[it][name] == pytest.approx(a[it][name], rel=1e-6, abs=0), (it, name)
        assert b[it]['digest'] == a[it]['digest'], it  # bit-identical weights
    # the loss modules' state is in the checkpoint that the resume used
    state = torch.load(osp.join(parted, 'iter_3.pth'), weights_only=False)
    keys = state['state_dict'].keys()
    assert 'rng_state' in state and 'meta' in state
    if case == 'det':
        assert any('.generation.' in k for k in keys) and any('conv_mask_s' in k for k in keys)
    elif case == 'cls_auto_weight':
        assert int(state['state_dict']['auto_weights.kd.steps']) == 3
        final = [torch.load(osp.join(d, 'iter_8.pth'), weights_only=False)['state_dict']
                 for d in (straight, parted)]
        assert int(final[1]['auto_weights.kd.steps']) == 5
        assert torch.equal(final[0]['auto_weights.kd.weight'], final[1]['auto_weights.kd.weight'])
        assert 'auto_weight: weight' in log and 'to fix it: loss_weight=' in log
    else:
        assert any('memory' in k for k in keys) and any('theta' in k for k in keys)


def test_resume_says_when_the_teacher_checkpoint_changed(tmp_path):
    from mmengine.config import Config

    from tests.utils import save_teacher
    pytest.importorskip('mmpretrain')
    if not osp.isdir(osp.join(SHARED_DATA, 'cifar10')):
        pytest.skip('needs ../shared/data/cifar10')
    config = osp.join(ROOT, 'tests', 'data', 'kd_resnet-gn_tiny_cifar10.py')
    teacher_cfg = Config.fromfile(config).model.teacher.config.model
    teacher = str(tmp_path / 'teacher.pth')
    save_teacher(teacher_cfg, teacher, scope='mmpretrain', seed=1)
    work = str(tmp_path / 'work')
    opt = f'model.teacher.checkpoint={teacher}'
    run('tools/train.py', config, '--work-dir', work, '--cfg-options', opt,
        'train_cfg.max_iters=1')
    log = run('tools/train.py', config, '--work-dir', work, '--resume', '--cfg-options', opt,
              'train_cfg.max_iters=2')
    assert 'teacher checkpoint changed' not in log
    save_teacher(teacher_cfg, teacher, scope='mmpretrain', seed=2)  # same file, new weights
    log = run('tools/train.py', config, '--work-dir', work, '--resume', '--cfg-options', opt,
              'train_cfg.max_iters=3')
    assert 'The teacher checkpoint changed since this run started' in log

"""tools/train.py -> tools/test.py -> tools/export_student.py -> mmdet's init_detector, on the
real COCO subset in ../shared/data/coco_tiny (a few iterations of a tiny FGD run)."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, SHARED_DATA

pytest.importorskip('mmdet')
CONFIG = osp.join(ROOT, 'tests', 'data', 'fgd_retinanet_tiny_coco-tiny.py')
pytestmark = pytest.mark.skipif(not osp.isdir(osp.join(SHARED_DATA, 'coco_tiny')),
                                reason='needs ../shared/data/coco_tiny')


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    from mmengine.config import Config

    from tests.utils import save_teacher
    tmp = tmp_path_factory.mktemp('det')
    cfg = Config.fromfile(CONFIG)
    teacher = str(tmp / 'teacher.pth')
    save_teacher(cfg.model.teacher.config.model, teacher)
    work = str(tmp / 'work')
    log = run('tools/train.py', CONFIG, '--work-dir', work,
              '--cfg-options', f'model.teacher.checkpoint={teacher}')
    return dict(tmp=tmp, work=work, teacher=teacher, log=log)


def test_train_logs_distill_loss_and_saves_no_teacher(trained):
    assert 'loss_fgd' in trained['log'] and 'Iter(train) [6/6]' in trained['log']
    ckpt = torch.load(osp.join(trained['work'], 'iter_6.pth'), weights_only=False)
    keys = ckpt['state_dict'].keys()
    assert not any(k.startswith('teacher.') for k in keys)
    assert any(k.startswith('student.') for k in keys)
    assert any(k.startswith('distill_losses.fgd.4.') for k in keys)  # 5 levels, 5 modules
    teacher_ids = {k for k in keys if 'teacher' in k and 'distill_losses' not in k}
    assert not teacher_ids


def test_test_tool_reports_coco_map(trained):
    out = run('tools/test.py', CONFIG, osp.join(trained['work'], 'iter_6.pth'),
              '--work-dir', str(trained['tmp'] / 'test'))
    assert 'coco/bbox_mAP' in out


def test_export_loads_with_stock_init_detector(trained):
    from mmdet.apis import init_detector
    out_pth = str(trained['tmp'] / 'student.pth')
    out_cfg = str(trained['tmp'] / 'student.py')
    run('tools/export_student.py', CONFIG, osp.join(trained['work'], 'iter_6.pth'), out_pth,
        '--student-config', out_cfg)
    export = torch.load(out_pth)  # weights only: plain tensors and containers
    model = init_detector(out_cfg, out_pth, device='cpu')
    assert set(export['state_dict']) == set(model.state_dict())  # no missing, no unexpected
    assert not any(k.startswith(('teacher', 'distill_losses')) for k in export['state_dict'])
    train = torch.load(osp.join(trained['work'], 'iter_6.pth'), weights_only=False)['state_dict']
    for k, v in model.state_dict().items():
        assert torch.equal(v, train['student.' + k]), k
    assert model.dataset_meta['classes'][0] == 'person'


def test_resume_continues_from_checkpoint(trained):
    log = run('tools/train.py', CONFIG, '--work-dir', trained['work'], '--resume',
              '--cfg-options', f'model.teacher.checkpoint={trained["teacher"]}',
              'train_cfg.max_iters=7', 'train_cfg.val_interval=100')
    assert 'resumed' in log.lower() and 'Iter(train) [7/7]' in log
    assert 'Iter(train) [1/7]' not in log
    assert osp.isfile(osp.join(trained['work'], 'iter_7.pth'))

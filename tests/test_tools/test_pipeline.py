"""tools/train.py -> tools/test.py -> tools/export_student.py -> the stock loader, on real data:
FGD on the COCO subset (../shared/data/coco_tiny) and CWD + MGD on the CamVid subset
(../shared/data/camvid_mini), a few iterations of tiny models each."""
import os
import os.path as osp
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from tests.conftest import ROOT, SHARED_DATA


@dataclass
class Case:
    config: str
    scope: str
    data: str
    metric: str
    loss: str
    loss_module_key: str
    loader: str  # 'module:function' of the stock loader


CASES = {
    'det': Case('fgd_retinanet_tiny_coco-tiny.py', 'mmdet', 'coco_tiny', 'coco/bbox_mAP',
                'loss_fgd', 'distill_losses.fgd.4.', 'mmdet.apis:init_detector'),
    'seg': Case('cwd_pspnet_tiny_camvid-mini.py', 'mmseg', 'camvid_mini', 'mIoU',
                'loss_cwd', 'distill_losses.mgd.0.', 'mmseg.apis:init_model'),
}


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope='module', params=sorted(CASES))
def trained(request, tmp_path_factory):
    from mmengine.config import Config

    from tests.utils import save_teacher
    case = CASES[request.param]
    pytest.importorskip(case.scope)
    if not osp.isdir(osp.join(SHARED_DATA, case.data)):
        pytest.skip(f'needs ../shared/data/{case.data}')
    tmp = tmp_path_factory.mktemp(request.param)
    config = osp.join(ROOT, 'tests', 'data', case.config)
    cfg = Config.fromfile(config)
    teacher = str(tmp / 'teacher.pth')
    save_teacher(cfg.model.teacher.config.model, teacher, scope=case.scope)
    work = str(tmp / 'work')
    log = run('tools/train.py', config, '--work-dir', work,
              '--cfg-options', f'model.teacher.checkpoint={teacher}', 'train_cfg.val_interval=100')
    return dict(case=case, config=config, tmp=tmp, work=work, teacher=teacher, log=log,
                ckpt=osp.join(work, 'iter_6.pth'))


def test_train_logs_distill_loss_and_saves_no_teacher(trained):
    case = trained['case']
    assert case.loss in trained['log'] and 'Iter(train) [6/6]' in trained['log']
    keys = torch.load(trained['ckpt'], weights_only=False)['state_dict'].keys()
    assert not any(k.startswith('teacher.') for k in keys)
    assert any(k.startswith('student.') for k in keys)
    assert any(k.startswith(case.loss_module_key) for k in keys)


def test_test_tool_reports_metric(trained):
    out = run('tools/test.py', trained['config'], trained['ckpt'],
              '--work-dir', str(trained['tmp'] / 'test'))
    assert trained['case'].metric in out


def test_export_loads_with_stock_loader(trained):
    import importlib
    case = trained['case']
    module, func = case.loader.split(':')
    loader = getattr(importlib.import_module(module), func)
    out_pth = str(trained['tmp'] / 'student.pth')
    out_cfg = str(trained['tmp'] / 'student.py')
    run('tools/export_student.py', trained['config'], trained['ckpt'], out_pth,
        '--student-config', out_cfg)
    export = torch.load(out_pth)  # weights only: plain tensors and containers
    model = loader(out_cfg, out_pth, device='cpu')
    assert set(export['state_dict']) == set(model.state_dict())  # no missing, no unexpected
    assert not any(k.startswith(('teacher', 'distill_losses')) for k in export['state_dict'])
    train = torch.load(trained['ckpt'], weights_only=False)['state_dict']
    for k, v in model.state_dict().items():
        assert torch.equal(v, train['student.' + k]), k
    assert model.dataset_meta['classes']


def test_resume_continues_from_checkpoint(trained):
    log = run('tools/train.py', trained['config'], '--work-dir', trained['work'], '--resume',
              '--cfg-options', f'model.teacher.checkpoint={trained["teacher"]}',
              'train_cfg.max_iters=7', 'train_cfg.val_interval=100')
    assert 'resumed' in log.lower() and 'Iter(train) [7/7]' in log
    assert 'Iter(train) [1/7]' not in log
    assert osp.isfile(osp.join(trained['work'], 'iter_7.pth'))

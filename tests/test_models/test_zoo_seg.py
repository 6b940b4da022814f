"""Architectures of mmsegmentation's own model zoo as students: configs we do not ship.

Each stock config (``mmseg::``, pretrained init removed: no download; SyncBN as BN, as a single
process trains; the data preprocessor padding to the test batch's size) is both the student and
a stand-in teacher of the same architecture. CWD on the final classifier's logits and MGD on the
backbone's last output (or a head's feature); one training step must give finite, positive
distillation losses, change the student, leave the teacher bit-identical and without gradients,
and prediction must run on the student.
"""
import copy

import pytest
import torch

mmseg = pytest.importorskip('mmseg')

from mmengine.hub import get_config  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from tests.conftest import use_scope  # noqa: E402
from tests.test_models.zoo import checked_distill_step, save_stand_in  # noqa: E402
from tests.utils import seg_batch  # noqa: E402

_scope = use_scope('mmseg')
register_all_modules()

#: dilated ResNets with ASPP and UPerNet heads, a transformer (SegFormer), a cascade of heads
#: (OCRNet on HRNet), real-time networks with auxiliary heads (BiSeNetV2, STDC, PIDNet,
#: Fast-SCNN)
ZOO = {
    'deeplabv3plus/deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'decode_head.conv_seg',
    'upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py': 'decode_head.conv_seg',
    'segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py': 'decode_head.conv_seg',
    'ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py': 'decode_head.1.conv_seg',
    'bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py': 'decode_head.conv_seg',
    'stdc/stdc1_4xb12-80k_cityscapes-512x1024.py': 'decode_head.conv_seg',
    'pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py': 'decode_head.conv_seg',
    'fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py': 'decode_head.conv_seg',
}
SIZE = (128, 128)
#: the feature MGD taps where not the backbone's last output (PIDNet's backbone returns one
#: tensor in inference and three in training)
FEATURES = {'pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py': 'decode_head.i_head'}


def without_sync_bn(cfg):
    """``cfg`` with every ``SyncBN`` norm as ``BN`` (what a single process can run)."""
    if isinstance(cfg, dict):
        return type(cfg)({k: 'BN' if k == 'type' and v == 'SyncBN' else without_sync_bn(v)
                          for k, v in cfg.items()})
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(without_sync_bn(v) for v in cfg)
    return cfg


def stock_model(name: str, size: tuple[int, int]):
    """The config's segmentor, without pretrained init, SyncBN as BN, padding to ``size``."""
    model = get_config(f'mmseg::{name}').model
    model.pop('pretrained', None)
    model.backbone.pop('init_cfg', None)
    model.backbone.pop('pretrained', None)
    model.data_preprocessor.size = size
    return without_sync_bn(model)


@pytest.mark.parametrize('name', list(ZOO))
def test_stock_segmentor_as_student(name, tmp_path):
    size, feature = SIZE, FEATURES.get(name, 'backbone[-1]')
    student, logits = stock_model(name, size), ZOO[name]
    path = str(tmp_path / 'teacher.pth')
    save_stand_in(MODELS, student, path)
    losses = dict(
        cwd=dict(type='CWDLoss', student=logits, teacher=logits, tau=1.0, loss_weight=3.0),
        mgd=dict(type='MGDLoss', student=feature, teacher=feature,
                 alpha_mgd=2e-5, lambda_mgd=0.75))
    model = MODELS.build(dict(
        type='DistillSegmentor', student=student, distill_losses=losses, dry_run_shape=size,
        teacher=dict(config=dict(model=copy.deepcopy(student)), checkpoint=path)))
    model.init_weights()
    num_classes = model.student.decode_head.num_classes if hasattr(
        model.student.decode_head, 'num_classes') else model.student.decode_head[-1].num_classes
    batch = seg_batch(n=2, size=size, num_classes=num_classes - 1)
    for sample in batch['data_samples']:  # what PIDNet's pipeline (GenerateEdge) adds
        sample.gt_edge_map = PixelData(data=(sample.gt_sem_seg.data % 2).to(torch.uint8))
    checked_distill_step(model, batch, losses, 'decode_head.')
    model.eval()
    with torch.no_grad():
        results = model.test_step(seg_batch(n=1, size=size, num_classes=num_classes - 1))
    assert len(results) == 1 and results[0].pred_sem_seg.data.shape[-2:] == size

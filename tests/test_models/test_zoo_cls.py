"""Architectures of mmpretrain's own model zoo as students: configs we do not ship.

Each stock config (``mmpretrain::``, pretrained init removed: no download) is both the student and
a stand-in teacher of the same architecture, with the config's top-level data preprocessor as a
runner passes it. KD (with logit standardisation) and DKD on the head's logits; one training step
must give finite, positive distillation losses, change the student, leave the teacher
bit-identical and without gradients, and prediction must run on the student.
"""
import copy

import pytest
import torch

mmpretrain = pytest.importorskip('mmpretrain')

from mmengine.hub import get_config  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from tests.conftest import use_scope  # noqa: E402
from tests.test_models.zoo import checked_distill_step, save_stand_in  # noqa: E402
from tests.utils import cls_batch  # noqa: E402

_scope = use_scope('mmpretrain')
register_all_modules()

#: CNNs (plain, depthwise, re-parameterisable), a vision transformer, hierarchical and pooling
#: transformers, and heads of every kind (linear, stacked, ViT, EfficientFormer, LeViT)
ZOO = [
    'resnet/resnet18_8xb32_in1k.py',
    'mobilenet_v3/mobilenet-v3-small_8xb128_in1k.py',
    'efficientnet/efficientnet-b0_8xb32_in1k.py',
    'regnet/regnetx-400mf_8xb128_in1k.py',
    'repvgg/repvgg-A0_8xb32_in1k.py',
    'mobileone/mobileone-s0_8xb32_in1k.py',
    'convnext/convnext-tiny_32xb128_in1k.py',
    'deit/deit-tiny_4xb256_in1k.py',
    'swin_transformer/swin-tiny_16xb64_in1k.py',
    'poolformer/poolformer-s12_32xb128_in1k.py',
    'efficientformer/efficientformer-l1_8xb128_in1k.py',
    'levit/levit-128s_8xb256_in1k.py',
]
#: input sizes other than 64: fixed-size attention biases, Swin's 7 x 7 windows at stride 32
SIZES = {'levit/levit-128s_8xb256_in1k.py': 224,
         'efficientformer/efficientformer-l1_8xb128_in1k.py': 224,
         'swin_transformer/swin-tiny_16xb64_in1k.py': 224}
LOSSES = dict(
    kd=dict(type='KDLoss', student='head', teacher='head', temperature=2.0, logit_stand=True,
            loss_weight=9.0),
    dkd=dict(type='DKDLoss', student='head', teacher='head', alpha=1.0, beta=8.0, temperature=4.0))


def stock(name: str):
    """The config's classifier (no pretrained init, no batch augments) and data preprocessor."""
    cfg = get_config(f'mmpretrain::{name}')
    model = cfg.model
    model.backbone.pop('init_cfg', None)
    model.pop('init_cfg', None)
    model.get('train_cfg', {}).pop('augments', None)  # Mixup/CutMix: soft labels, not tested here
    if model.head.type in ('EfficientFormerClsHead', 'LeViTClsHead'):
        model.head.distillation = False  # mmpretrain cannot train these heads' distillation form
    return model, cfg.get('data_preprocessor')


@pytest.mark.parametrize('name', ZOO)
def test_stock_classifier_as_student(name, tmp_path):
    student, preprocessor = stock(name)
    size = SIZES.get(name, 64)
    path = str(tmp_path / 'teacher.pth')
    save_stand_in(MODELS, student, path)
    model = MODELS.build(dict(
        type='DistillClassifier', student=student, distill_losses=copy.deepcopy(LOSSES),
        teacher=dict(config=dict(model=copy.deepcopy(student),
                                 data_preprocessor=copy.deepcopy(preprocessor)),
                     checkpoint=path),
        data_preprocessor=preprocessor, dry_run_shape=(size, size)))
    model.init_weights()
    checked_distill_step(model, cls_batch(n=4, num_classes=1000, size=size), LOSSES, 'head.')
    model.eval()
    with torch.no_grad():
        results = model.test_step(cls_batch(n=2, num_classes=1000, size=size))
    assert len(results) == 2 and results[0].pred_score.shape == (1000,)

"""DistillClassifier on tiny real mmpretrain classifiers (CPU)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper

from tests.utils import cls_batch, save_teacher, tiny_classifier

pytest.importorskip('mmpretrain')

from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from mmdistill.losses.dkd import dkd_loss  # noqa: E402
from mmdistill.losses.kd import kd_loss  # noqa: E402
from mmdistill.losses.sdd import multi_scale_pool  # noqa: E402

from tests.conftest import use_scope  # noqa: E402

_scope = use_scope('mmpretrain')

register_all_modules()
KD = dict(type='KDLoss', student='head', teacher='head', temperature=4.0, loss_weight=0.9)


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('cls') / 'teacher.pth')
    save_teacher(tiny_classifier(16), path, scope='mmpretrain')
    return path


def build(ckpt, losses, student=None, teacher=None, **kwargs):
    model = MODELS.build(dict(
        type='DistillClassifier', student=student or tiny_classifier(8),
        teacher=dict(config=dict(model=teacher or tiny_classifier(16)), checkpoint=ckpt),
        distill_losses=losses, dry_run_shape=(32, 32), **kwargs))
    model.init_weights()
    return model


def logits(model, inputs):
    return model.head(model.extract_feat(inputs))


def test_train_step_kd_dkd(teacher_ckpt):
    model = build(teacher_ckpt, dict(
        kd=KD, dkd=dict(type='DKDLoss', student='head.fc', teacher='head.fc', alpha=1.0,
                        beta=8.0, temperature=4.0, weight_schedule=dict(warmup=20))))
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert not in_optim & {id(p) for p in model.teacher.model.parameters()}
    t_before = copy.deepcopy(model.teacher.model.state_dict())
    s_before = copy.deepcopy(model.student.state_dict())
    model.train()
    log = model.train_step(cls_batch(), optim)
    assert {'loss', 'loss_kd', 'loss_dkd'} <= set(log)
    for k, v in model.teacher.model.state_dict().items():
        assert torch.equal(v, t_before[k]), k
    assert any(not torch.equal(v, s_before[k]) for k, v in model.student.state_dict().items())


def test_kd_and_dkd_values_match_logits(teacher_ckpt):
    model = build(teacher_ckpt, dict(
        kd=KD, dkd=dict(type='DKDLoss', student='head', teacher='head')))
    model.eval()  # BN in eval: the recorded logits equal a fresh forward
    batch = cls_batch()
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        losses = model.loss(**copy.deepcopy(data))
        ls, lt = logits(model.student, data['inputs']), logits(model.teacher.model, data['inputs'])
    labels = torch.cat([s.gt_label for s in batch['data_samples']])
    torch.testing.assert_close(losses['loss_kd'], 0.9 * kd_loss(ls, lt, 4.0))
    torch.testing.assert_close(losses['loss_dkd'], dkd_loss(ls, lt, labels, 1.0, 8.0, 4.0))


def test_soft_labels_from_mixup_reach_the_loss(teacher_ckpt):
    model = build(teacher_ckpt, dict(dkd=dict(type='DKDLoss', student='head', teacher='head')))
    batch = cls_batch(soft=True)
    labels = model._extra_inputs('gt_labels', batch['data_samples'])
    assert labels.shape == (4, 10) and labels.dtype.is_floating_point
    model.eval()
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        losses = model.loss(**copy.deepcopy(data))
        ls, lt = logits(model.student, data['inputs']), logits(model.teacher.model, data['inputs'])
    torch.testing.assert_close(losses['loss_dkd'],
                               dkd_loss(ls, lt, labels.argmax(1), 1.0, 8.0, 4.0))


def test_sdd_local_logits_use_each_models_classifier(teacher_ckpt):
    from mmdistill.losses.sdd import SDDLoss
    model = build(teacher_ckpt, dict(sdd=dict(type='SDDLoss', student='backbone[-1]',
                                              teacher='backbone[-1]', temperature=4.0,
                                              classifier='head.fc')))
    model.eval()
    batch = cls_batch()
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        losses = model.loss(**copy.deepcopy(data))
        fs = model.student.backbone(data['inputs'])[-1]
        ft = model.teacher.model.backbone(data['inputs'])[-1]
    # independent: per region, average pool and the model's own fc
    def local(feat, fc):
        rows = []
        for s in (1, 2, 4):
            pooled = F.adaptive_avg_pool2d(F.adaptive_avg_pool2d(feat, 4), s)
            for i in range(s):
                for j in range(s):
                    rows.append(fc(pooled[:, :, i, j]))
        return torch.stack(rows, 2)
    ls = local(fs, model.student.head.fc)
    lt = local(ft, model.teacher.model.head.fc)
    torch.testing.assert_close(ls[:, :, 0], logits(model.student, data['inputs']),
                               rtol=1e-5, atol=1e-5)  # region 0 is the global logits
    torch.testing.assert_close(
        torch.stack([model.student.head.fc(multi_scale_pool(fs).transpose(1, 2)[:, m])
                     for m in range(21)], 2), ls, rtol=1e-5, atol=1e-6)
    labels = torch.cat([s.gt_label for s in batch['data_samples']])
    torch.testing.assert_close(losses['loss_sdd'], SDDLoss(4.0)(ls, lt, labels))


def test_ofa_gets_stage_features_and_student_logits(teacher_ckpt):
    model = build(teacher_ckpt, dict(ofa=dict(
        type='OFALoss', student=[f'backbone.layer{i}' for i in (1, 2, 3, 4)], teacher='head',
        student_channels=[8, 16, 32, 64], teacher_channels=128, num_classes=10,
        ofa_stage=(1, 2, 3, 4))))
    assert len(model.distill_losses['ofa']) == 1
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    before = copy.deepcopy(model.distill_losses.state_dict())
    model.train()
    log = model.train_step(cls_batch(), optim)
    assert torch.isfinite(log['loss_ofa']) and log['loss_ofa'] > 0
    changed = [k for k, v in model.distill_losses.state_dict().items()
               if not torch.equal(v, before[k])]
    assert any('projector' in k or 'proj' in k for k in changed), changed[:5]


def test_crd_gets_dataset_indices(teacher_ckpt):
    model = build(teacher_ckpt, dict(crd=dict(
        type='CRDLoss', student='neck', teacher='neck', student_channels=64,
        teacher_channels=128, feat_dim=16, nce_k=8, n_data=20)))
    batch = cls_batch()
    assert model._extra_inputs('indices', batch['data_samples']).tolist() == [10, 11, 12, 13]
    mem_before = model.distill_losses['crd'][0].state_dict()
    mem_before = {k: v.clone() for k, v in mem_before.items()}
    model.train()
    model.loss(**model.data_preprocessor(batch, True))
    after = model.distill_losses['crd'][0].state_dict()
    changed = [k for k, v in after.items() if not torch.equal(v, mem_before[k])]
    assert changed  # the memory banks moved at the batch's rows
    bank = [k for k in changed if after[k].dim() == 2 and after[k].shape[0] == 20][0]
    rows = (after[bank] != mem_before[bank]).any(1).nonzero().flatten().tolist()
    assert rows == [10, 11, 12, 13]


def test_predict_uses_student_alone(teacher_ckpt):
    model = build(teacher_ckpt, dict(kd=KD))
    model.eval()
    calls = []
    model.teacher.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    data = model.data_preprocessor(cls_batch(), False)
    with torch.no_grad():
        ours = model.predict(**copy.deepcopy(data))
        ref = model.student.predict(*copy.deepcopy(data).values())
    assert not calls and type(ours[0]).__name__ == 'DataSample'
    for a, b in zip(ours, ref):
        assert torch.equal(a.pred_score, b.pred_score)


def test_class_count_mismatch_rejected(tmp_path):
    path = str(tmp_path / 't100.pth')
    save_teacher(tiny_classifier(16, num_classes=100), path, scope='mmpretrain')
    with pytest.raises(ValueError, match=r'model.distill_losses.kd.*10 classes.*100'):
        build(path, dict(kd=KD), teacher=tiny_classifier(16, num_classes=100))


def test_sdd_without_classifier_layer_rejected(teacher_ckpt):
    with pytest.raises(ValueError, match=r'model.distill_losses.sdd.classifier.*head.cls'):
        build(teacher_ckpt, dict(sdd=dict(type='SDDLoss', student='backbone[-1]',
                                          teacher='backbone[-1]', classifier='head.cls')))
    with pytest.raises(ValueError, match=r'sdd.*classifier.*not the nn.Linear'):
        build(teacher_ckpt, dict(sdd=dict(type='SDDLoss', student='backbone[-1]',
                                          teacher='backbone[-1]', classifier='head.loss_module')))
    with pytest.raises(ValueError, match=r'sdd.student: SDD needs the last feature map'):
        build(teacher_ckpt, dict(sdd=dict(type='SDDLoss', student='neck', teacher='neck',
                                          classifier='head.fc')))
    with pytest.raises(ValueError, match=r"sdd.student: without classifier .* classifier='head"):
        build(teacher_ckpt, dict(sdd=dict(type='SDDLoss', student='backbone[-1]',
                                          teacher='backbone[-1]')))

"""CrossKDLoss on real mmdet GFL heads: the cross-head predictions equal the teacher's layers
run by hand on the aligned student feature; the loss equals the official formula written with
mmdet's own GIoULoss, Integral, DistancePointBBoxCoder and knowledge_distillation_kl_div_loss;
in a DistillDetector the teacher's branch is resolved by path, its parameters stay out of the
distiller and get no gradient, and the student's head and backbone learn through it."""
import copy

import pytest
import torch
import torch.nn.functional as F

mmdet = pytest.importorskip('mmdet')

from mmdet.models.losses import GIoULoss  # noqa: E402
from mmdet.models.losses.kd_loss import knowledge_distillation_kl_div_loss  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402

from mmdistill.losses import CrossKDLoss  # noqa: E402
from mmdistill.losses.base import ModelModules  # noqa: E402
from tests.conftest import use_scope  # noqa: E402
from tests.utils import det_batch, save_teacher, tiny_gfl  # noqa: E402

_scope = use_scope('mmdet')
register_all_modules()

REG_MAX, K = 4, 3
SIZES = [(8, 6), (4, 3), (2, 2), (1, 1), (1, 1)]


def heads():
    """(student, teacher) GFL heads in float64; the teacher's level scales are not 1."""
    cfg = tiny_gfl(reg_max=REG_MAX, num_classes=K)['bbox_head']
    torch.manual_seed(0)
    student = MODELS.build(cfg).double()
    torch.manual_seed(1)
    teacher = MODELS.build(cfg).double().eval().requires_grad_(False)
    for m in (*student.modules(), *teacher.modules()):  # heads initialise convs ~N(0, 0.01)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.3)
    for level, scale in enumerate(teacher.scales):
        scale.scale.data.fill_(0.5 + 0.25 * level)
    return student, teacher


def branches(teacher):
    return (ModelModules([teacher.cls_convs[0].activate, teacher.cls_convs[1],
                            teacher.gfl_cls]),
            ModelModules([teacher.reg_convs[0].activate, teacher.reg_convs[1], teacher.gfl_reg,
                            teacher.scales]))


def level_inputs(student, teacher, seed=0):
    """Per level: student (cls, reg) features at reused_teacher_head_idx=1 (pre-activation of
    conv 0), the teacher's, and the teacher's own predictions."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for level, (h, w) in enumerate(SIZES):
        xs = torch.randn(2, 16, h, w, generator=g, dtype=torch.float64, requires_grad=True)
        xt = 2 * torch.randn(2, 16, h, w, generator=g, dtype=torch.float64)
        hold_s = [c[0](xs, activate=False) for c in (student.cls_convs, student.reg_convs)]
        hold_t = [c[0](xt, activate=False) for c in (teacher.cls_convs, teacher.reg_convs)]
        t_cls, t_reg = teacher.forward_single(xt, teacher.scales[level])
        out.append((xs, hold_s, hold_t, t_cls, t_reg.double()))  # GFLHead returns .float()
    return out


def flat(levels):
    preds_S = [lv[1][0] for lv in levels] + [lv[1][1] for lv in levels]
    preds_T = ([lv[2][0] for lv in levels] + [lv[2][1] for lv in levels]
               + [lv[3] for lv in levels] + [lv[4] for lv in levels])
    return preds_S, preds_T


def hand_align(s, t):
    """Official align_scale: channels first, statistics over everything else."""
    n, c, h, w = s.shape
    s2, t2 = s.transpose(0, 1).reshape(c, -1), t.transpose(0, 1).reshape(c, -1)
    s2 = (s2 - s2.mean(1, keepdim=True)) / (s2.std(1, keepdim=True) + 1e-6)
    s2 = s2 * t2.std(1, keepdim=True) + t2.mean(1, keepdim=True)
    return s2.reshape(c, n, h, w).transpose(0, 1)


def test_cross_head_is_the_teacher_head_on_the_aligned_student_feature():
    student, teacher = heads()
    loss = CrossKDLoss(*branches(teacher), reg_max=REG_MAX)
    for level, (_, hold_s, hold_t, t_cls, t_reg) in enumerate(level_inputs(student, teacher)):
        cls, reg = loss.cross_head(hold_s, hold_t, level)
        x = F.relu(hand_align(hold_s[0], hold_t[0]))
        torch.testing.assert_close(cls, teacher.gfl_cls(teacher.cls_convs[1](x)))
        x = F.relu(hand_align(hold_s[1], hold_t[1]))
        torch.testing.assert_close(
            reg, teacher.scales[level](teacher.gfl_reg(teacher.reg_convs[1](x))))
        # the teacher's own features give the teacher's own predictions (up to align_scale's
        # eps of 1e-6 on the std)
        own_cls, own_reg = loss.cross_head(hold_t, hold_t, level)
        torch.testing.assert_close(own_cls, t_cls, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(own_reg, t_reg, rtol=1e-4, atol=1e-5)


def reference(loss, levels, num_gts, teacher):
    """The official CrossKDGFL.pred_mimicking_loss_single, summed over levels, with
    avg_factor = 9 * num_gts standing in for the ATSS positives."""
    giou = GIoULoss(loss_weight=2.0)
    avg_factor = 9.0 * num_gts
    cls_kd, reg_kd, box_kd, weights = 0., 0., 0., 0.
    for level, (_, hold_s, hold_t, t_cls, t_reg) in enumerate(levels):
        c, r = loss.cross_head(hold_s, hold_t, level)
        c = c.permute(0, 2, 3, 1).reshape(-1, K)
        t = t_cls.permute(0, 2, 3, 1).reshape(-1, K)
        soft = t.sigmoid()
        cls_kd += (F.binary_cross_entropy_with_logits(c, soft, reduction='none')
                   * (c.sigmoid() - soft).abs()).sum() / avg_factor
        w = t.max(dim=1)[0].sigmoid()
        # class_reduction='sum' = mmdet's mean over the bins x (reg_max + 1)
        reg_kd += 3.0 * (REG_MAX + 1) * knowledge_distillation_kl_div_loss(
            r.permute(0, 2, 3, 1).reshape(-1, REG_MAX + 1),
            t_reg.permute(0, 2, 3, 1).reshape(-1, REG_MAX + 1),
            weight=w[:, None].expand(-1, 4).reshape(-1), avg_factor=4.0, T=1)
        n, _, h, wd = t_cls.shape
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(wd), indexing='ij')
        centres = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(n, -1, -1).reshape(-1, 2)
        corners = [teacher.integral(x.permute(0, 2, 3, 1).reshape(-1, 4 * (REG_MAX + 1)))
                   for x in (r, t_reg)]
        boxes = [teacher.bbox_coder.decode(centres.double(), x) for x in corners]
        box_kd += giou(boxes[0], boxes[1], weight=w, avg_factor=1.0)
        weights += w.sum()
    return cls_kd + (reg_kd + box_kd) / weights


def test_loss_is_the_official_formula():
    student, teacher = heads()
    loss = CrossKDLoss(*branches(teacher), reg_max=REG_MAX)
    levels = level_inputs(student, teacher)
    preds_S, preds_T = flat(levels)
    gt = [torch.zeros(3, 4), torch.zeros(0, 4)]
    value = loss(preds_S, [p.detach() for p in preds_T], gt)
    assert float(value) > 0
    # mmdet divides by avg_factor + float32 eps
    assert float(value) == pytest.approx(float(reference(loss, levels, 3, teacher)), rel=1e-6)
    value.backward()
    assert all(lv[0].grad is not None and lv[0].grad.abs().sum() > 0 for lv in levels)
    assert all(p.grad is None for p in teacher.parameters())
    grads = {n: p.grad for n, p in student.named_parameters()}
    assert grads['cls_convs.0.conv.weight'].abs().sum() > 0
    assert grads['reg_convs.0.conv.weight'].abs().sum() > 0
    assert grads['gfl_cls.weight'] is None  # the student's own last layers are not used
    # no gt box: num_pos is clamped to 1
    assert torch.isfinite(loss(preds_S, preds_T, [torch.zeros(0, 4)]))


def test_bad_inputs():
    student, teacher = heads()
    loss = CrossKDLoss(*branches(teacher), reg_max=REG_MAX)
    preds_S, preds_T = flat(level_inputs(student, teacher))
    with pytest.raises(ValueError, match='takes 2L student tensors'):
        loss(preds_S, preds_T[:-1], [])
    bad = [p[:, :8] for p in preds_S]
    with pytest.raises(ValueError, match="teacher's feat_channels"):
        loss(bad, preds_T, [])
    with pytest.raises(ValueError, match='set reg_max=4'):
        CrossKDLoss(*branches(teacher))(preds_S, preds_T, [])
    with pytest.raises(TypeError, match='list of module paths, which the distillation wrapper'):
        CrossKDLoss(['bbox_head.gfl_cls'], ['bbox_head.gfl_reg'])


# ------------------------------------------------------------------ in a DistillDetector
SCALES = [f'bbox_head.scales.{i}' for i in range(5)]
HOLDS = ['bbox_head.cls_convs.0.gn', 'bbox_head.reg_convs.0.gn']
CROSSKD = dict(
    type='CrossKDLoss', student=HOLDS, teacher=HOLDS + ['bbox_head.gfl_cls'] + SCALES,
    cls_branch=['bbox_head.cls_convs.0.activate', 'bbox_head.cls_convs.1', 'bbox_head.gfl_cls'],
    reg_branch=['bbox_head.reg_convs.0.activate', 'bbox_head.reg_convs.1', 'bbox_head.gfl_reg',
                'bbox_head.scales'],
    reg_max=REG_MAX)


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('teacher') / 'teacher.pth')
    save_teacher(tiny_gfl(16, 16, reg_max=REG_MAX), path)
    return path


def build(ckpt, **entry):
    model = MODELS.build(dict(
        type='DistillDetector', student=tiny_gfl(8, 16, reg_max=REG_MAX),
        teacher=dict(config=dict(model=tiny_gfl(16, 16, reg_max=REG_MAX)), checkpoint=ckpt),
        distill_losses=dict(crosskd=dict(CROSSKD, **entry))))
    model.init_weights()
    return model


def test_distill_detector_step(teacher_ckpt):
    model = build(teacher_ckpt)
    loss = model.distill_losses['crosskd'][0]
    assert loss.cls_branch.modules[-1] is model.teacher.model.bbox_head.gfl_cls
    assert loss.reg_branch.modules[-1] is model.teacher.model.bbox_head.scales
    # the norm outputs are changed in place by the ReLU after them: recorded as copies
    assert set(HOLDS) <= model._student_rec.copied
    assert set(HOLDS) <= model.teacher.recorder.copied
    teacher_ids = {id(p) for p in model.teacher.model.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert list(loss.parameters()) == []
    assert not any(k.startswith(('teacher.', 'distill_losses.')) for k in model.state_dict())
    assert copy.deepcopy(model).distill_losses['crosskd'][0].cls_branch is loss.cls_branch

    model.train()
    data = model.data_preprocessor(det_batch(), True)
    losses = model.loss(**data)
    assert torch.isfinite(losses['loss_crosskd']) and losses['loss_crosskd'] > 0
    losses['loss_crosskd'].backward()
    assert all(p.grad is None for p in model.teacher.model.parameters())
    grads = {n: p.grad for n, p in model.student.named_parameters()}
    for name in ('backbone.conv1.weight', 'neck.fpn_convs.0.conv.weight',
                 'bbox_head.cls_convs.0.conv.weight', 'bbox_head.reg_convs.0.conv.weight'):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    for name in ('bbox_head.gfl_cls.weight', 'bbox_head.cls_convs.1.conv.weight'):
        assert grads[name] is None, name  # CrossKD leaves the student's later layers alone

    model.zero_grad()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert not in_optim & teacher_ids
    before = copy.deepcopy(model.teacher.model.state_dict())
    log = model.train_step(det_batch(), optim)
    assert torch.isfinite(log['loss_crosskd'])
    for k, v in model.teacher.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.teacher.model.parameters())


def test_missing_teacher_module_is_named_with_candidates(teacher_ckpt):
    with pytest.raises(ValueError) as err:
        build(teacher_ckpt, cls_branch=['bbox_head.cls_convs.0.activate',
                                        'bbox_head.cls_convs.5', 'bbox_head.gfl_cls'])
    msg = str(err.value)
    assert 'model.distill_losses.crosskd.cls_branch' in msg
    assert "'bbox_head.cls_convs.5'" in msg and 'bbox_head.cls_convs.1' in msg

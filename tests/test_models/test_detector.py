"""DistillDetector on tiny real mmdet RetinaNets (CPU)."""
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper

from tests.utils import det_batch, save_teacher, tiny_retinanet

mmdet = pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401

from tests.conftest import use_scope  # noqa: E402

_scope = use_scope('mmdet')

register_all_modules()

FGD = dict(type='FGDLoss', student='neck', teacher='neck', student_channels=32,
           teacher_channels=64, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4,
           lambda_fgd=5e-6)


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('teacher') / 'teacher.pth')
    save_teacher(tiny_retinanet(base_channels=32, fpn_channels=64), path)
    return path


def build(teacher_ckpt, losses=None, **kwargs):
    cfg = dict(type='DistillDetector', student=tiny_retinanet(),
               teacher=dict(config=dict(model=tiny_retinanet(32, 64)), checkpoint=teacher_ckpt),
               distill_losses=losses if losses is not None else dict(fgd=FGD), **kwargs)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def test_train_step_updates_student_only(teacher_ckpt):
    losses = dict(
        fgd=FGD,
        mgd=dict(type='MGDLoss', student='neck[0]', teacher='neck[0]', student_channels=32,
                 teacher_channels=64, alpha_mgd=2e-5, lambda_mgd=0.65),
        cwd=dict(type='CWDLoss', student='bbox_head.retina_cls', teacher='bbox_head.retina_cls',
                 tau=1.0, loss_weight=5.0))
    model = build(teacher_ckpt, losses)
    assert model.teacher.scope == 'full'
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)))
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert not in_optim & {id(p) for p in model.teacher.model.parameters()}
    assert {id(p) for p in model.student.parameters()} <= in_optim
    assert {id(p) for p in model.distill_losses.parameters()} <= in_optim
    teacher_before = copy.deepcopy(model.teacher.model.state_dict())
    student_before = copy.deepcopy(model.student.state_dict())
    mgd_before = copy.deepcopy(model.distill_losses['mgd'].state_dict())
    model.train()
    log = model.train_step(det_batch(), optim)
    for name in ('loss_fgd', 'loss_mgd', 'loss_cwd', 'loss_cls', 'loss_bbox'):
        assert name in log and torch.isfinite(log[name]), name
    assert log['loss_cwd'] > 0 and log['loss_fgd'] > 0
    assert not model.teacher.model.training
    for k, v in model.teacher.model.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    changed = [k for k, v in model.student.state_dict().items()
               if not torch.equal(v, student_before[k])]
    assert any(k.startswith('backbone.') for k in changed)
    assert any(k.startswith('neck.') for k in changed)
    assert all(p.grad is None for p in model.teacher.model.parameters())
    # loss modules learn too (MGD's align conv and generation block)
    for k, v in model.distill_losses['mgd'].state_dict().items():
        assert not torch.equal(v, mgd_before[k]), k
    assert len(model.distill_losses['fgd']) == 5  # one FGD module per FPN level


def test_distill_loss_gradient_reaches_student_only(teacher_ckpt):
    model = build(teacher_ckpt)
    model.train()
    data = model.data_preprocessor(det_batch(), True)
    losses = model.loss(**data)
    losses['loss_fgd'].backward()
    assert all(p.grad is None for p in model.teacher.model.parameters())
    grads = [p.grad for n, p in model.student.named_parameters() if n.startswith('neck.')]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    head = [p.grad for n, p in model.student.named_parameters() if n.startswith('bbox_head.')]
    assert all(g is None for g in head)  # FGD on the neck: no gradient into the head


def test_checkpoint_has_no_teacher(teacher_ckpt):
    model = build(teacher_ckpt)
    keys = model.state_dict().keys()
    assert not any(k.startswith('teacher.') for k in keys)
    assert any(k.startswith('student.') for k in keys)
    assert any(k.startswith('distill_losses.fgd.0.') for k in keys)
    with_teacher = build(teacher_ckpt, save_teacher=True)
    state = with_teacher.state_dict()
    t_keys = [k for k in state if k.startswith('teacher.')]
    assert len(t_keys) == len(with_teacher.teacher.model.state_dict())
    # loading such a checkpoint restores the teacher from it
    bias = 'teacher.neck.fpn_convs.0.conv.bias'
    state = {k: (v + 1 if k == bias else v) for k, v in state.items()}
    with_teacher.load_state_dict(state, strict=True)
    assert torch.equal(with_teacher.teacher.model.neck.fpn_convs[0].conv.bias,
                       state['teacher.neck.fpn_convs.0.conv.bias'])


def test_teacher_runs_only_to_its_taps(teacher_ckpt):
    model = build(teacher_ckpt)
    assert model.teacher.scope == 'neck'
    calls = []
    model.teacher.model.bbox_head.register_forward_hook(lambda *a: calls.append(1))
    model.train()
    model.loss(**model.data_preprocessor(det_batch(), True))
    assert calls == []


def test_predict_uses_student_alone(teacher_ckpt):
    model = build(teacher_ckpt)
    model.eval()
    calls = []
    model.teacher.model.register_forward_hook(lambda *a: calls.append(1))
    model.teacher.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    data = model.data_preprocessor(det_batch(), False)
    with torch.no_grad():
        ours = model.predict(**copy.deepcopy(data))
        ref = model.student.predict(*copy.deepcopy(data).values())
    assert calls == []
    for a, b in zip(ours, ref):
        assert torch.equal(a.pred_instances.bboxes, b.pred_instances.bboxes)
        assert torch.equal(a.pred_instances.scores, b.pred_instances.scores)


def test_teacher_keeps_its_own_normalisation(tmp_path):
    t_cfg = tiny_retinanet(32, 64, mean=(0., 0., 0.), std=(255., 255., 255.))
    t_cfg['data_preprocessor']['bgr_to_rgb'] = False
    path = str(tmp_path / 't.pth')
    save_teacher(t_cfg, path)
    model = MODELS.build(dict(type='DistillDetector', student=tiny_retinanet(),
                              teacher=dict(config=dict(model=t_cfg), checkpoint=path),
                              distill_losses=dict(fgd=FGD)))
    batch = det_batch()
    s_in = model.data_preprocessor(copy.deepcopy(batch), False)['inputs']
    t_in = model.teacher.model.data_preprocessor(copy.deepcopy(batch), False)['inputs']
    torch.testing.assert_close(model.teacher.inputs(s_in), t_in, rtol=1e-5, atol=1e-5)
    same = build(path)  # same normalisation: inputs pass through untouched
    assert same.teacher.inputs(s_in) is s_in


def test_init_student_copies_matching_teacher_parts(tmp_path):
    path = str(tmp_path / 't.pth')
    t_state = save_teacher(tiny_retinanet(32, 32), path)
    model = MODELS.build(dict(
        type='DistillDetector', student=tiny_retinanet(16, 32),
        teacher=dict(config=dict(model=tiny_retinanet(32, 32)), checkpoint=path),
        distill_losses=dict(fgd=dict(FGD, student_channels=None, teacher_channels=None)),
        init_student=True))
    model.init_weights()
    s_state = model.student.state_dict()
    for k in ('bbox_head.retina_cls.weight', 'neck.fpn_convs.0.conv.weight'):
        assert torch.equal(s_state[k], t_state[k])
    # lateral convs differ in input channels (16*2 vs 32*2): not copied
    assert s_state['neck.lateral_convs.0.conv.weight'].shape != \
        t_state['neck.lateral_convs.0.conv.weight'].shape
    assert not torch.equal(s_state['backbone.conv1.weight'][:, :, :1, :1],
                           t_state['backbone.conv1.weight'][:16, :, :1, :1])


# ---------------------------------------------------------------- bad input at build time
@pytest.mark.parametrize('losses,error,words', [
    (dict(fgd=dict(FGD, student='neck.fpn_convs.7')), ValueError,
     ['model.distill_losses.fgd.student', 'neck.fpn_convs.7', 'neck.fpn_convs.4']),
    (dict(fgd=dict(FGD, teacher='nek[0]', student='neck[0]')), ValueError,
     ['model.distill_losses.fgd.teacher', "'nek'", 'neck']),
    (dict(fgd=dict(FGD, student='neck[5]', teacher='neck[5]')), IndexError,
     ['model.distill_losses.fgd.student', 'neck[5]', 'returns 5 outputs']),
    (dict(fgd=dict(FGD, student_channels=None, teacher_channels=None)), ValueError,
     ['model.distill_losses.fgd', '32 channels', '64', 'student_channels']),
    (dict(fgd=dict(FGD, student_channels=16)), ValueError,
     ['model.distill_losses.fgd', 'student_channels=16', '32 (student)']),
    (dict(fgd=dict(FGD, type='FGDLos')), KeyError,
     ['model.distill_losses.fgd.type', 'FGDLos', 'FGDLoss', 'MGDLoss', 'CWDLoss']),
    (dict(kd=dict(type='CWDLoss', student='neck[0]', teacher='bbox_head.retina_cls[0]',
                  student_channels=32, teacher_channels=64)), ValueError,
     ['model.distill_losses.kd', '27', 'teacher_channels=64']),
])
def test_bad_config_rejected(teacher_ckpt, losses, error, words):
    with pytest.raises(error) as err:
        build(teacher_ckpt, losses)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_missing_and_misfit_teacher_checkpoint(tmp_path, teacher_ckpt):
    with pytest.raises(FileNotFoundError, match=r'model.teacher.checkpoint.*nope.pth'):
        build(str(tmp_path / 'nope.pth'))
    other = str(tmp_path / 'other.pth')
    save_teacher(tiny_retinanet(32, 48), other)  # FPN width 48 vs the config's 64
    with pytest.raises(ValueError) as err:
        build(other)
    msg = str(err.value)
    assert 'model.teacher.checkpoint' in msg and 'shape mismatches' in msg
    assert 'neck.fpn_convs.0.conv.weight' in msg
    state = torch.load(teacher_ckpt)['state_dict']
    state['extra.weight'] = torch.zeros(1)
    del state['bbox_head.retina_reg.bias']
    torch.save({'state_dict': state}, other)
    with pytest.raises(ValueError) as err:
        build(other)
    assert "'extra.weight'" in str(err.value) and "'bbox_head.retina_reg.bias'" in str(err.value)


def test_teacher_checkpoint_with_more_than_weights_refused(tmp_path, teacher_ckpt):
    """Teacher checkpoints load as weights only: pickled objects are refused, clearly (the types
    of mmengine's own training checkpoints aside, which ``import mmdistill`` allows)."""
    import argparse

    from mmengine.logging import HistoryBuffer
    state = torch.load(teacher_ckpt)['state_dict']
    path = str(tmp_path / 'trained.pth')
    torch.save({'state_dict': state, 'message_hub': HistoryBuffer([1.0], [1])}, path)
    build(path)  # a teacher trained with mmengine loads as it is
    path = str(tmp_path / 'pickled.pth')
    torch.save({'state_dict': state, 'args': argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError) as err:
        build(path)
    msg = str(err.value)
    assert 'model.teacher.checkpoint' in msg and 'weights only' in msg
    assert 'tools/export_student.py' in msg


def test_loss_needing_ground_truth_on_wrapper_without_it(teacher_ckpt):
    from mmdistill.models.detector import DistillDetector

    class NoGT(DistillDetector):
        provided_inputs = ()

    with pytest.raises(ValueError, match=r"fgd.*needs \['gt_bboxes', 'img_shape'\].*NoGT"):
        NoGT(student=tiny_retinanet(),
             teacher=dict(config=dict(model=tiny_retinanet(32, 64)), checkpoint=teacher_ckpt),
             distill_losses=dict(fgd=FGD))


def test_teacher_autocast_and_student_amp(teacher_ckpt):
    """bf16 teacher (teacher_autocast) and a bf16-autocast student step (CPU stand-in for
    --amp): the taps arrive in bf16, the losses stay float32, finite and near the fp32 value."""
    losses = dict(fgd=FGD, cwd=dict(type='CWDLoss', student='bbox_head.retina_cls',
                                    teacher='bbox_head.retina_cls', tau=1.0, loss_weight=5.0))
    ref = build(teacher_ckpt, losses)
    half = build(teacher_ckpt, losses, teacher_autocast='bf16')
    half.load_state_dict(ref.state_dict())
    dtypes = []
    half.teacher.model.neck.register_forward_hook(lambda m, i, o: dtypes.append(o[0].dtype))
    for m in (ref, half):
        m.eval()  # BN in eval: both see the same statistics
    data = ref.data_preprocessor(det_batch(), True)
    with torch.no_grad():
        full = ref.loss(**copy.deepcopy(data))
        mixed = half.loss(**copy.deepcopy(data))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            amp = ref.loss(**copy.deepcopy(data))
    assert dtypes == [torch.bfloat16]
    # bf16 keeps 8 mantissa bits: the FGD feature loss stays within a few percent; CWD is a KL
    # between nearly equal maps of a random teacher, a difference of rounded terms: same order
    for name, rel in (('loss_fgd', 0.05), ('loss_cwd', 0.5)):
        for value in (mixed[name], amp[name]):
            assert value.dtype == torch.float32 and torch.isfinite(value)
            assert value == pytest.approx(float(full[name]), rel=rel), name
    with pytest.raises(ValueError, match='teacher_autocast'):
        build(teacher_ckpt, teacher_autocast='half')


def test_fast_teacher_is_channels_last_and_gives_the_same_losses(teacher_ckpt):
    """``teacher_autocast`` turns channels-last on (weights and input), unless told otherwise;
    the losses with the fast teacher are within 2 % of the fp32 teacher's."""
    ref = build(teacher_ckpt)
    fast = build(teacher_ckpt, teacher_autocast='bf16')
    plain = build(teacher_ckpt, teacher_autocast='bf16', teacher_channels_last=False)
    alone = build(teacher_ckpt, teacher_channels_last=True)
    conv = 'backbone.conv1.weight'

    def is_cl(model):
        weight = model.teacher.model.state_dict()[conv]
        return weight.is_contiguous(memory_format=torch.channels_last)

    assert [is_cl(m) for m in (ref, fast, plain, alone)] == [False, True, False, True]
    assert not fast.student.state_dict()[conv].is_contiguous(memory_format=torch.channels_last)
    seen = []
    fast.teacher.model.backbone.conv1.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    fast.load_state_dict(ref.state_dict())
    for m in (ref, fast):
        m.eval()
    data = ref.data_preprocessor(det_batch(), True)
    with torch.no_grad():
        full, quick = ref.loss(**copy.deepcopy(data)), fast.loss(**copy.deepcopy(data))
    assert seen == [True]
    assert float(quick['loss_fgd']) == pytest.approx(float(full['loss_fgd']), rel=0.02)


def test_bf16_optim_wrapper_trains_the_student_in_bf16_on_cpu(teacher_ckpt, monkeypatch):
    """``--amp`` on a CPU with native bf16 (mocked; tests/test_precision.py: without it):
    BF16OptimWrapper runs the forward under bf16 autocast with the student in channels-last; the
    float32 weights change, the teacher does not."""
    from mmengine.config import Config

    from mmdistill.engine import use_amp
    monkeypatch.setattr(torch.cpu, 'get_capabilities', lambda: {'avx512_bf16': True})
    cfg = Config(dict(model=dict(type='DistillDetector'), default_scope='mmdet',
                      optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01))))
    use_amp(cfg)
    assert cfg.optim_wrapper.type == 'BF16OptimWrapper' and cfg.model.student_channels_last
    model = build(teacher_ckpt, student_channels_last=True)
    assert model.student.state_dict()['backbone.conv1.weight'].is_contiguous(
        memory_format=torch.channels_last)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    dtypes = []
    model.student.neck.register_forward_hook(lambda m, i, o: dtypes.append(o[0].dtype))
    before = {k: v.clone() for k, v in model.student.state_dict().items()}
    teacher = {k: v.clone() for k, v in model.teacher.model.state_dict().items()}
    from mmdistill.analysis import loss_balance
    stats = []  # gradients taken inside the bf16 forward (FGD's backward)
    model.loss_observers.append(lambda task, distill: stats.append(
        loss_balance(task, distill, model.student.parameters(), grads=True)))
    log = model.train_step(det_batch(), optim)
    assert dtypes == [torch.bfloat16] and torch.isfinite(log['loss'])
    assert sum(v for k, v in stats[0].items()
               if k.startswith('grad_share_')) == pytest.approx(1.0, abs=1e-3)
    after = model.student.state_dict()
    assert after['backbone.conv1.weight'].dtype == torch.float32
    assert not torch.equal(after['backbone.conv1.weight'], before['backbone.conv1.weight'])
    assert all(torch.equal(v, model.teacher.model.state_dict()[k]) for k, v in teacher.items())


def test_wrapper_gives_the_students_attributes(teacher_ckpt):
    """Hooks of mmdet's own configs reach into runner.model (YOLOXModeSwitchHook sets
    ``model.bbox_head.use_l1``): the wrapper answers with the student's attributes, its own
    first, and names both in the error for an attribute neither has."""
    model = build(teacher_ckpt)
    assert model.bbox_head is model.student.bbox_head
    model.bbox_head.some_switch = True
    assert model.student.bbox_head.some_switch is True
    assert model.data_preprocessor is model.student.data_preprocessor
    assert model.teacher.model is not model.student  # the wrapper's own attribute first
    with pytest.raises(AttributeError, match="DistillDetector' object \\(and its student "
                                             "RetinaNet\\) has no attribute 'no_such_thing'"):
        model.no_such_thing
    copy.deepcopy(model)  # copying does not recurse through the forwarding

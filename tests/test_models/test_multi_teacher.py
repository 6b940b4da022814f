"""Several teachers: ``teachers=dict(<name>=...)`` and ``teacher_name`` per loss entry, on tiny
mmpretrain classifiers of different widths (CPU)."""
import copy

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper

from tests.utils import cls_batch, save_teacher, tiny_classifier

pytest.importorskip('mmpretrain')

from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from mmdistill.analysis.features import paired_features, tap_pairs  # noqa: E402
from mmdistill.losses.kd import kd_loss  # noqa: E402

from tests.conftest import use_scope  # noqa: E402

_scope = use_scope('mmpretrain')

register_all_modules()
WIDTHS = dict(a=16, b=24)  # backbone[-1]: 128 and 192 channels; the student's: 64
KD = dict(type='KDLoss', student='head', teacher='head')
ENTRIES = dict(
    kd_a=dict(KD, teacher_name='a', temperature=4.0, loss_weight=0.5),
    kd_b=dict(KD, teacher_name='b', temperature=2.0, loss_weight=0.3),
    fit_b=dict(type='FitNetLoss', student='backbone[-1]', teacher='backbone[-1]',
               teacher_name='b', student_channels=64, teacher_channels=192, loss_weight=2.0))


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp('teachers')
    paths = {}
    for seed, (name, width) in enumerate(WIDTHS.items(), start=1):
        paths[name] = str(root / f'{name}.pth')
        save_teacher(tiny_classifier(width), paths[name], seed=seed, scope='mmpretrain')
    return paths


def spec(ckpts, name):
    return dict(config=dict(model=tiny_classifier(WIDTHS[name])), checkpoint=ckpts[name])


def build(ckpts, entries=ENTRIES, names=('a', 'b'), teachers=None, **kwargs):
    model = MODELS.build(dict(
        type='DistillClassifier', student=tiny_classifier(8), dry_run_shape=(32, 32),
        teachers=teachers or {n: spec(ckpts, n) for n in names}, distill_losses=entries,
        **kwargs))
    model.init_weights()
    return model


def build_single(ckpts, name, entries):
    return MODELS.build(dict(
        type='DistillClassifier', student=tiny_classifier(8), dry_run_shape=(32, 32),
        teacher=spec(ckpts, name),
        distill_losses={k: {a: b for a, b in v.items() if a != 'teacher_name'}
                        for k, v in entries.items()}))


def test_losses_equal_those_of_single_teacher_distillers(ckpts):
    model = build(ckpts)
    singles = {n: build_single(ckpts, n, {k: v for k, v in ENTRIES.items()
                                          if v['teacher_name'] == n}) for n in WIDTHS}
    for single in singles.values():  # the same student and FitNet regressor
        result = single.load_state_dict(model.state_dict(), strict=False)
        assert not result.missing_keys
    data = model.data_preprocessor(cls_batch(), False)
    for m in (model, *singles.values()):
        m.eval()  # BN in eval: the recorded logits equal a fresh forward
    with torch.no_grad():
        losses = model.loss(**copy.deepcopy(data))
        ref = {k: v for s in singles.values() for k, v in s.loss(**copy.deepcopy(data)).items()}
        logits = {n: t.model.head(t.model.extract_feat(data['inputs']))
                  for n, t in model.teachers.items()}
        ls = model.student.head(model.student.extract_feat(data['inputs']))
    for key in ('loss_kd_a', 'loss_kd_b', 'loss_fit_b', 'loss'):
        assert losses[key] > 0
        torch.testing.assert_close(losses[key], ref[key], rtol=1e-6, atol=0)
    # independently: each KD entry against its own teacher's logits
    torch.testing.assert_close(losses['loss_kd_a'], 0.5 * kd_loss(ls, logits['a'], 4.0))
    torch.testing.assert_close(losses['loss_kd_b'], 0.3 * kd_loss(ls, logits['b'], 2.0))
    assert not torch.allclose(logits['a'], logits['b'])


def test_teachers_stay_frozen_and_out_of_optimizer_and_state_dict(ckpts):
    model = build(ckpts)
    assert list(model.teachers) == ['a', 'b']
    assert [t.checkpoint for t in model.teachers.values()] == [ckpts['a'], ckpts['b']]
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    before = {}
    for name, teacher in model.teachers.items():
        ids = {id(p) for p in teacher.model.parameters()}
        assert ids and not ids & in_optim and not ids & {id(p) for p in model.parameters()}
        before[name] = copy.deepcopy(teacher.model.state_dict())
    s_before = copy.deepcopy(model.student.state_dict())
    model.train()
    log = model.train_step(cls_batch(), optim)
    assert {'loss_kd_a', 'loss_kd_b', 'loss_fit_b'} <= set(log)
    for name, teacher in model.teachers.items():
        assert not teacher.model.training
        assert all(p.grad is None for p in teacher.model.parameters())
        for k, v in teacher.model.state_dict().items():
            assert torch.equal(v, before[name][k]), (name, k)
    assert any(not torch.equal(v, s_before[k]) for k, v in model.student.state_dict().items())
    assert not any(k.startswith(('teacher.', 'teachers.')) for k in model.state_dict())


def test_save_teacher_writes_and_restores_each_teacher(ckpts):
    model = build(ckpts, save_teacher=True)
    state = copy.deepcopy(model.state_dict())
    for name, teacher in model.teachers.items():
        keys = [k for k in state if k.startswith(f'teachers.{name}.')]
        assert len(keys) == len(teacher.model.state_dict())
    bias = 'teachers.b.head.fc.bias'
    model.load_state_dict({k: (v + 1 if k == bias else v) for k, v in state.items()})
    assert torch.equal(model.teachers['b'].model.head.fc.bias, state[bias] + 1)
    assert torch.equal(model.teachers['a'].model.head.fc.bias,
                       state['teachers.a.head.fc.bias'])


def test_only_teachers_with_an_active_entry_run(ckpts):
    stop = dict(stop=1)  # on at step 1, off from step 2
    entries = dict(ENTRIES, kd_b=dict(ENTRIES['kd_b'], weight_schedule=stop),
                   fit_b=dict(ENTRIES['fit_b'], weight_schedule=stop))
    model = build(ckpts, entries)
    calls = {n: [] for n in WIDTHS}
    for name, teacher in model.teachers.items():
        teacher.model.backbone.register_forward_hook(lambda *a, n=name: calls[n].append(1))
    hub = MessageHub.get_instance('test_multi_teacher_stop')
    model.train()
    data = model.data_preprocessor(cls_batch(), True)
    hub.update_info('iter', 0)
    model.loss(**copy.deepcopy(data))
    assert calls == dict(a=[1], b=[1])
    hub.update_info('iter', 1)
    losses = model.loss(**copy.deepcopy(data))
    assert calls == dict(a=[1, 1], b=[1])
    assert losses['loss_kd_b'] == 0 and losses['loss_fit_b'] == 0 and losses['loss_kd_a'] > 0


def test_feature_pairs_name_their_teacher(ckpts):
    model = build(ckpts)
    assert tap_pairs(model, None) == [('head', 'head', 'a'), ('head', 'head', 'b'),
                                      ('backbone[-1]', 'backbone[-1]', 'b')]
    pairs = tap_pairs(model, ['backbone[-1]@a', 'neck:neck@b'])
    assert pairs == [('backbone[-1]', 'backbone[-1]', 'a'), ('neck', 'neck', 'b')]
    with pytest.raises(ValueError, match=r"@<name>, one of \['a', 'b'\]"):
        tap_pairs(model, ['neck'])
    with pytest.raises(ValueError, match=r"'c' names no teacher"):
        tap_pairs(model, ['neck@c'])
    model.eval()
    with paired_features(model, pairs) as features:
        feats = features(cls_batch())
    assert feats['backbone[-1] @a [0]'][1].shape[1] == 128
    assert feats['neck @b [0]'][1].shape[1] == 192


@pytest.mark.parametrize('change,words', [
    (dict(entries=dict(kd=KD)), ['model.distill_losses.kd.teacher_name', "['a', 'b']"]),
    (dict(entries=dict(kd=dict(KD, teacher_name='c'))),
     ['model.distill_losses.kd.teacher_name', "'c'", "['a', 'b']"]),
    (dict(entries=dict(fit=dict(ENTRIES['fit_b'], teacher_name='a'))),  # a gives 128 channels
     ['model.distill_losses.fit', 'teacher_channels=192', '128 (teacher)']),
    (dict(init_student=True), ['init_student', 'one trained teacher']),
])
def test_bad_config_rejected(ckpts, change, words):
    change = dict(change)
    with pytest.raises(ValueError) as err:
        build(ckpts, change.pop('entries', ENTRIES), **change)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_teacher_and_teachers_are_exclusive(ckpts):
    with pytest.raises(ValueError, match='exactly one of model.teacher.*both'):
        build(ckpts, teacher=spec(ckpts, 'a'))
    with pytest.raises(ValueError, match='exactly one of model.teacher.*neither'):
        MODELS.build(dict(type='DistillClassifier', student=tiny_classifier(8),
                          distill_losses=dict(kd=KD)))
    with pytest.raises(FileNotFoundError, match=r"model.teachers.b.checkpoint.*nope.pth"):
        build(ckpts, teachers=dict(a=spec(ckpts, 'a'),
                                   b=dict(spec(ckpts, 'b'), checkpoint='nope.pth')))
    with pytest.raises(ValueError, match='model.teachers: teacher names are identifiers'):
        build(ckpts, teachers={'a.b': spec(ckpts, 'a')})


def test_one_named_teacher_needs_no_teacher_name(ckpts):
    model = build(ckpts, dict(kd=KD), names=('b',))
    assert model.entries[0].teacher_name == 'b'
    assert model.teacher is model.teachers['b']
    with pytest.raises(RuntimeError, match=r"several teachers \['a', 'b'\]"):
        build(ckpts).teacher


def test_resume_notes_a_changed_checkpoint_per_teacher(ckpts, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from mmdistill.hooks import distill_state_hook
    from mmdistill.hooks.distill_state_hook import DistillStateHook
    model = build(ckpts)
    runner = SimpleNamespace(model=model)
    checkpoint = {}
    DistillStateHook().before_save_checkpoint(runner, checkpoint)
    saved = checkpoint['meta']['teacher_checkpoints']
    assert sorted(saved) == ['a', 'b'] and saved['a']['path'] == ckpts['a']
    saved['b'] = dict(saved['b'], sha256='0' * 64)
    logs = []
    monkeypatch.setattr(distill_state_hook, 'print_log', lambda msg, **kw: logs.append(msg))
    DistillStateHook().after_load_checkpoint(runner, checkpoint)
    assert len(logs) == 1 and 'The teacher checkpoint of model.teachers.b changed' in logs[0]

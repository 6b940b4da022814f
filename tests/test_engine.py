"""Engine pieces: a wrapper is recognised by its type, the runner by ``runner_type``."""
import os
import subprocess
import sys

import pytest
from mmengine.config import Config

pytest.importorskip('mmdet')
pytest.importorskip('mmpretrain')

from mmdet.registry import MODELS as DET_MODELS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdistill  # noqa: E402,F401
from mmdistill.engine import DistillRunner, distiller_class, prepare_config  # noqa: E402
from mmdistill.engine.cli import build_runner  # noqa: E402
from mmdistill.models import DistillDetector  # noqa: E402
from tests.conftest import ROOT, SHARED_DATA  # noqa: E402
from tests.utils import tiny_classifier  # noqa: E402


@DET_MODELS.register_module(force=True)
class MyTeamDistiller(DistillDetector):
    """A user's own wrapper: a distiller by type, whatever its name."""


def test_distillers_are_recognised_by_type():
    assert distiller_class(Config(dict(default_scope='mmdet', model=dict(
        type='DistillDetector')))) is DistillDetector
    assert distiller_class(Config(dict(default_scope='mmdet', model=dict(
        type='MyTeamDistiller')))) is MyTeamDistiller
    assert distiller_class(Config(dict(default_scope='mmdet', model=dict(
        type='RetinaNet')))) is None
    assert distiller_class(Config(dict(model=dict(type=MyTeamDistiller)))) is MyTeamDistiller
    cfg = prepare_config(Config(dict(default_scope='mmdet', model=dict(type='MyTeamDistiller'),
                                     custom_hooks=[])))
    assert [h['type'] for h in cfg.custom_hooks] == ['DistillStateHook']
    plain = prepare_config(Config(dict(default_scope='mmdet', model=dict(type='RetinaNet'))))
    assert 'custom_hooks' not in plain


def test_prepare_config_is_idempotent_and_leaves_test_runs_alone():
    cfg = Config(dict(default_scope='mmdet', model=dict(type='MyTeamDistiller'),
                      custom_hooks=[]))
    prepare_config(prepare_config(cfg))
    assert [h['type'] for h in cfg.custom_hooks] == ['DistillStateHook']
    test_run = prepare_config(Config(dict(default_scope='mmdet', model=dict(
        type='MyTeamDistiller', skip_teacher=True))))
    assert 'custom_hooks' not in test_run


def _cls_config(tmp_path, **extra):
    from tools.experiments.cifar import cifar_config
    cfg = cifar_config(tiny_classifier(8), os.path.join(SHARED_DATA, 'cifar10'),
                       str(tmp_path / 'run'), 2, 4, 0.01, 'engine', progress=False)
    cfg.update(extra)
    return Config(cfg)


def test_runner_type_is_honoured(tmp_path):
    assert type(build_runner(_cls_config(tmp_path))) is DistillRunner
    assert type(build_runner(_cls_config(tmp_path, runner_type='Runner'))) is Runner


def test_auto_scale_lr_without_the_config_key_is_a_clear_error(tmp_path):
    path = str(tmp_path / 'cfg.py')
    _cls_config(tmp_path).dump(path)
    out = subprocess.run([sys.executable, 'tools/train.py', path, '--auto-scale-lr'], cwd=ROOT,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode != 0
    assert '--auto-scale-lr: the config has no auto_scale_lr' in out.stderr


def test_the_runner_prepares_the_config_for_training_and_for_a_test(tmp_path):
    from tests.utils import save_teacher, tiny_distill_classifier_config
    teacher = str(tmp_path / 'teacher.pth')
    save_teacher(tiny_classifier(16), teacher, scope='mmpretrain')
    model = tiny_distill_classifier_config(teacher)
    cfg = _cls_config(tmp_path, model=model)
    prepare_config(cfg)  # as a user's script may: the runner adds nothing twice
    hooks = [type(h).__name__ for h in build_runner(cfg).hooks]
    assert hooks.count('DistillStateHook') == 1
    cfg = _cls_config(tmp_path, model=dict(model, skip_teacher=True))  # tools/test.py's mark
    runner = build_runner(cfg)
    assert 'DistillStateHook' not in [type(h).__name__ for h in runner.hooks]
    assert runner.model.teacher is None


class Crash(Exception):
    """The process dying mid-write, as an exception."""


def _checkpointing_config(tmp_path, max_keep_ckpts: int = -1) -> Config:
    """3 iterations of the tiny classifier, a checkpoint after each, no validation."""
    cfg = _cls_config(tmp_path)
    cfg.train_cfg.update(max_iters=3, val_interval=4)
    cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=max_keep_ckpts)
    return cfg


def _every_checkpoint_loads(work_dir: str) -> bool:
    import glob

    import torch
    for path in glob.glob(os.path.join(work_dir, '*.pth')):
        try:
            torch.load(path, weights_only=False)
        except Exception:
            return False
    return True


def _resume_from_latest(cfg: Config) -> str:
    """Resume ``cfg``'s run as ``--resume`` does and train it to the end; the file resumed from."""
    from mmengine.runner import find_latest_checkpoint
    latest = find_latest_checkpoint(cfg.work_dir)
    cfg.resume = True
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 3
    return os.path.basename(latest)


@pytest.mark.parametrize('max_keep_ckpts', [-1, 1])
def test_a_crash_mid_checkpoint_write_leaves_the_previous_checkpoint_to_resume(
        tmp_path, monkeypatch, max_keep_ckpts):
    from mmengine.fileio import LocalBackend
    put = LocalBackend.put

    def crash_writing(name: str):
        """``LocalBackend.put`` that writes half of a file named ``name*`` and crashes."""
        def put_half_then_crash(self, obj: bytes, filepath) -> None:
            if os.path.basename(str(filepath)).startswith(name):
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                raise Crash(filepath)
            put(self, obj, filepath)
        return put_half_then_crash

    cfg = _checkpointing_config(tmp_path, max_keep_ckpts)
    monkeypatch.setattr(LocalBackend, 'put', crash_writing('iter_3.pth'))
    runner = build_runner(cfg)
    assert 'AtomicCheckpointHook' in [type(h).__name__ for h in runner.hooks]
    with pytest.raises(Crash):
        runner.train()
    # stock: a truncated iter_3.pth; with max_keep_ckpts=1 iter_2.pth deleted before the write
    assert _every_checkpoint_loads(cfg.work_dir)
    # a crash rewriting the checkpoint that last_checkpoint names leaves it whole
    monkeypatch.setattr(LocalBackend, 'put', crash_writing('iter_2.pth'))
    with pytest.raises(Crash):
        runner.save_checkpoint(cfg.work_dir, 'iter_2.pth')
    assert _every_checkpoint_loads(cfg.work_dir)
    monkeypatch.setattr(LocalBackend, 'put', put)
    assert _resume_from_latest(cfg) == 'iter_2.pth'


def test_a_crash_mid_last_checkpoint_write_leaves_it_naming_a_checkpoint(tmp_path, monkeypatch):
    import builtins

    import mmengine.hooks.checkpoint_hook

    import mmdistill.engine.checkpoint

    def open_truncate_then_crash(path, mode='r', *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if os.path.basename(str(path)).startswith('last_checkpoint') and 'w' in mode:
            f.close()  # truncated, nothing written
            raise Crash(path)
        return f

    cfg = _checkpointing_config(tmp_path)
    cfg.train_cfg.max_iters = 2
    build_runner(cfg).train()
    cfg.train_cfg.max_iters = 3
    cfg.resume = True
    for module in (mmengine.hooks.checkpoint_hook, mmdistill.engine.checkpoint):
        monkeypatch.setattr(module, 'open', open_truncate_then_crash, raising=False)
    with pytest.raises(Crash):
        build_runner(cfg).train()  # iteration 3's checkpoint written, last_checkpoint not
    monkeypatch.undo()
    assert _resume_from_latest(cfg) == 'iter_2.pth'

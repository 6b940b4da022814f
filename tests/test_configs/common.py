"""Checks shared by the config tests of the three wrappers."""
from __future__ import annotations

import os
import re

from mmengine.config import Config

from mmdistill.recorder import Tap
from mmdistill.registry import DISTILL_LOSSES
from tests.conftest import ROOT

WRAPPER_SCOPES = {'DistillDetector': 'mmdet', 'DistillSegmentor': 'mmseg',
                  'DistillClassifier': 'mmpretrain'}


def plain(value):
    """ConfigDicts/lists to plain dicts/lists, for comparison."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k not in ('_scope_', 'init_cfg')}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def taps(spec) -> list:
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def check_distill_config(cfg: Config, name: str, wrapper: str, models) -> None:
    """custom_imports, the wrapper type (registered in ``models``) and its library's ``_scope_``
    (the model builds when the config is inherited as ``mmdistill::...``), the teacher keys (of
    ``model.teacher`` or each of ``model.teachers``; an EMA teacher has only ``ema``), and the
    model-zoo URL in the comment above each teacher checkpoint path (the same file)."""
    assert cfg.custom_imports.imports == ['mmdistill']
    assert cfg.custom_imports.allow_failed_imports is False
    assert cfg.model.type == wrapper
    assert cfg.model._scope_ == WRAPPER_SCOPES[wrapper]
    assert models.get(wrapper) is not None
    assert ('teacher' in cfg.model) != ('teachers' in cfg.model)
    with open(os.path.join(ROOT, 'configs', name)) as f:
        urls = re.findall(r'https://download\.openmmlab\.com/\S+\.pth', f.read())
    specs = cfg.model.teachers.values() if 'teachers' in cfg.model else [cfg.model.teacher]
    for spec in specs:
        if set(spec) == {'ema'}:
            continue
        assert set(spec) == {'config', 'checkpoint'}
        ckpt = spec.checkpoint
        assert ckpt.startswith('checkpoints/') and ckpt.endswith('.pth')
        assert any(u.endswith('/' + os.path.basename(ckpt)) for u in urls), urls


def loss_kwargs(key: str, entry: dict, options: tuple[str, ...] = ()) -> tuple[type, dict]:
    """The registered loss class of an entry (taps parsed) and the arguments it is built with."""
    loss_cls = DISTILL_LOSSES.get(entry.type)
    assert loss_cls is not None, f'{key}: {entry.type} is not in DISTILL_LOSSES'
    for side in ('student', 'teacher'):
        for tap in taps(entry[side]):
            Tap.parse(tap, f'{key}.{side}')
    wrapper_keys = ('type', 'student', 'teacher', 'resize', 'loss_weight', 'weight_schedule',
                    'auto_weight', 'teacher_name')  # the wrapper applies them
    kwargs = {k: v for k, v in entry.items() if k not in (*wrapper_keys, *options)}
    return loss_cls, kwargs

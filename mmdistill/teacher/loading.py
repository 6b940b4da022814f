"""A trained teacher from its spec ``dict(config=..., checkpoint=...)``: the config loaded, the
model built, its checkpoint loaded strictly as weights only; eval mode, frozen."""
from __future__ import annotations

import os
import pickle

from mmengine.config import Config
from mmengine.registry import Registry
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

from .spec import TEACHER_KEY


def load_teacher_config(spec: str | dict, key: str) -> Config:
    """Load a teacher's config from a path, an ``'mmdet::path'`` package path or a dict;
    ``key`` names the config key in errors."""
    if isinstance(spec, dict):
        return Config(dict(spec))
    if not isinstance(spec, str):
        raise TypeError(f'{key}: expected a path, "mmdet::..." or a dict, got {spec!r}')
    if '::' in spec:
        from mmengine.hub import get_config
        try:
            return get_config(spec)
        except (FileNotFoundError, ValueError, ModuleNotFoundError) as err:
            raise FileNotFoundError(f'{key}: cannot load config {spec!r}: {err}') from err
    if not os.path.isfile(spec):
        raise FileNotFoundError(f'{key}: config file {spec!r} does not exist')
    return Config.fromfile(spec)


def model_config(cfg: Config, key: str = TEACHER_KEY) -> dict:
    """The model part of a full config (or the config itself when it is a model config); of a
    distillation config (``mmdistill::...``), its student: a distilled student as the teacher.

    A top-level ``data_preprocessor`` (mmpretrain's configs keep it there) goes into the model,
    as mmengine's Runner does, so the teacher keeps its own normalisation.
    """
    model = cfg.get('model', cfg)
    if 'type' not in model:
        raise ValueError(f'{key}.config: no model type in the teacher config')
    if model is not cfg and cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', cfg.data_preprocessor)
    if 'student' in model and 'distill_losses' in model:
        return model_config(Config(dict(model=model.student)), key)
    return model


def load_teacher_weights(model: nn.Module, checkpoint: str,
                         key: str = f'{TEACHER_KEY}.checkpoint') -> None:
    """Load ``checkpoint`` into ``model`` strictly, as weights only.

    Raises with the key named when the file is missing, holds more than tensors and plain
    containers, or does not fit the model (missing/unexpected keys, shape mismatches).
    """
    if '://' not in checkpoint and not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f'{key}: teacher checkpoint {checkpoint!r} does not exist. To train, download it '
            f'or pass --cfg-options {key}=/path/to/teacher.pth; to test or export the student '
            'alone (no teacher built), pass --cfg-options model.skip_teacher=True (mmdistill\'s '
            'tools/test.py and export_student.py do this themselves)')
    try:
        ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    except pickle.UnpicklingError as err:
        raise ValueError(
            f'{key}: {checkpoint!r} holds more than tensors and plain containers, so it is not '
            'loaded (teacher checkpoints load as weights only). Save the teacher as '
            "{'state_dict': model.state_dict()}, e.g. with "
            'tools/export_student.py TEACHER_CONFIG CHECKPOINT OUT.pth. '
            f'Loader said: {str(err).splitlines()[0]}') from err
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{key}: {checkpoint!r} holds no state dict')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in own if k in state and hasattr(state[k], 'shape')
              and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f'{key}: {checkpoint!r} does not fit the teacher config: '
            f'{len(missing)} missing keys {missing[:8]}, '
            f'{len(unexpected)} unexpected keys {unexpected[:8]}, '
            f'{len(shapes)} shape mismatches {shapes[:8]}')
    model.load_state_dict(state, strict=True)


def build_teacher(registry: Registry, teacher: dict, key: str = TEACHER_KEY) -> nn.Module:
    """Build the teacher from ``dict(config=..., checkpoint=...)``: loaded, eval, frozen.

    Its own initialisation (pretrained backbone URLs) is never run: the checkpoint holds all
    its weights. ``key`` names the teacher's config key in errors.
    """
    if not isinstance(teacher, dict) or 'config' not in teacher:
        raise ValueError(f'{key}: expected dict(config=..., checkpoint=...) or '
                         f'dict(ema=dict(momentum=...)), got {teacher!r}')
    unknown = set(teacher) - {'config', 'checkpoint'}
    if unknown:
        raise ValueError(f'{key}: unknown keys {sorted(unknown)} (expected config, checkpoint; '
                         'or ema alone)')
    if not teacher.get('checkpoint'):
        raise ValueError(f'{key}.checkpoint: a teacher needs its trained weights')
    config = load_teacher_config(teacher['config'], f'{key}.config')
    model = registry.build(model_config(config, key))
    load_teacher_weights(model, teacher['checkpoint'], f'{key}.checkpoint')
    model.eval()
    model.requires_grad_(False)
    return model

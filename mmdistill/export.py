"""Export the student of a distillation checkpoint as a plain checkpoint of the stock library."""
from __future__ import annotations

import torch
from mmengine.config import Config

from .engine.runner import distiller_class


def student_config(cfg: Config) -> Config:
    """The student's own config: ``model`` replaced by the student, mmdistill not needed."""
    cfg = cfg.copy()
    if distiller_class(cfg) is None:
        raise ValueError(f'model.type is {cfg.model.get("type")!r}, not a distillation wrapper '
                         '(a BaseDistiller such as DistillDetector)')
    cfg.model = cfg.model.student
    imports = [m for m in cfg.get('custom_imports', {}).get('imports', [])
               if m != 'mmdistill' and not m.startswith('mmdistill.')]
    if 'custom_imports' in cfg:
        if imports:
            cfg.custom_imports['imports'] = imports
        else:
            cfg.pop('custom_imports')
    return cfg


def export_student(config: str | Config, checkpoint: str, out: str,
                   out_config: str | None = None) -> int:
    """Write ``{'state_dict': student weights, 'meta': ...}`` to ``out``; return the tensor count.

    For a plain (non-distillation) config it writes the whole model's weights: the way to turn
    a teacher trained with mmengine into a weights-only teacher checkpoint.

    Training checkpoints hold mmengine's message hub and numpy arrays: ``import mmdistill``
    allows exactly those types under torch's weights-only loading.
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    state = ckpt.get('state_dict', ckpt)
    distill = distiller_class(cfg) is not None
    prefix = 'student.' if distill else ''
    student = {}
    for key, value in state.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        if key.startswith(prefix):
            student[key[len(prefix):]] = value
    if not student:
        raise ValueError(f'{checkpoint}: no "student." keys; is it a distillation checkpoint?')
    meta = {k: v for k, v in ckpt.get('meta', {}).items()
            if k in ('dataset_meta', 'mmengine_version', 'experiment_name', 'seed')}
    torch.save({'state_dict': student, 'meta': meta}, out)
    if out_config:
        (student_config(cfg) if distill else cfg).dump(out_config)
    return len(student)

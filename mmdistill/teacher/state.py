"""The distiller's state-dict hooks: the teachers' state in and out of its checkpoints."""
from __future__ import annotations

from typing import Any

from mmengine.logging import print_log
from torch import nn


def save_teacher_state(module: nn.Module, state_dict: dict, prefix: str,
                       local_metadata: dict) -> dict:
    """State-dict hook of a distiller: adds each teacher's :meth:`Teacher.state_dict` under its
    prefix (``teacher.*``, ``teachers.<name>.*``): an EMA teacher's always (it is training
    state: a resumed run continues the average), a trained teacher's when ``save_teacher``."""
    for teacher in module.teachers.values():
        if teacher.ema is not None or module.save_teacher:
            for name, value in teacher.state_dict().items():
                state_dict[f'{prefix}{teacher.prefix}{name}'] = value.detach()
    return state_dict


def load_teacher_state(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook of a distiller: takes the ``teacher.*`` and ``teachers.*`` keys
    out of the state dict and loads each teacher's into it (strictly). A student-only model
    (``skip_teacher``) has no teachers, loss modules or measured weights: their keys are
    dropped."""
    if module.skip_teacher:
        for k in [k for k in state_dict
                  if k.startswith((prefix + 'distill_losses.', prefix + 'auto_weights.'))]:
            del state_dict[k]
    keys = [k for k in state_dict if k.startswith((prefix + 'teacher.', prefix + 'teachers.'))]
    saved = {k[len(prefix):]: state_dict.pop(k) for k in keys}
    for teacher in module.teachers.values():
        own = {k[len(teacher.prefix):]: v for k, v in saved.items()
               if k.startswith(teacher.prefix)}
        if own:
            teacher.load_state_dict(own)
            print_log(f'loaded {teacher.key} from the checkpoint', logger='current')

"""The EMA teacher: the student's exponential moving average (self-distillation)."""
from __future__ import annotations

from mmengine.model import ExponentialMovingAverage
from torch import nn

from ..utils.keys import check_known_keys
from .spec import TEACHER_KEY

#: the keys of ``teacher=dict(ema=dict(...))``: :class:`mmengine.model.ExponentialMovingAverage`'s
EMA_KEYS = ('momentum', 'interval', 'update_buffers')


def build_ema(student: nn.Module, teacher: dict,
              key: str = TEACHER_KEY) -> ExponentialMovingAverage:
    """The EMA teacher of ``dict(ema=dict(momentum=0.0002, interval=1, update_buffers=False))``.

    mmengine's :class:`~mmengine.model.ExponentialMovingAverage` of a copy of ``student``:
    ``averaged = (1 - momentum) * averaged + momentum * student`` every ``interval``-th update;
    its first update copies the student (``steps == 0``). ``update_buffers``: average the buffers
    (BN statistics) too, else copy them from the student at every update.
    """
    extra = set(teacher) - {'ema'}
    if extra:
        raise ValueError(f'{key}: ema cannot be combined with {sorted(extra)}: an EMA teacher is '
                         'the average of the student, with no config or checkpoint of its own')
    ema = teacher['ema']
    if not isinstance(ema, dict):
        raise ValueError(f'{key}.ema: expected dict(momentum=..., interval=..., '
                         f'update_buffers=...), got {ema!r}')
    check_known_keys(ema, EMA_KEYS, f'{key}.ema')
    momentum, interval = ema.get('momentum', 0.0002), ema.get('interval', 1)
    if not 0 < momentum < 1:
        raise ValueError(f'{key}.ema.momentum must be in (0, 1) (the weight of the student in '
                         f'each update), got {momentum!r}')
    if not isinstance(interval, int) or interval < 1:
        raise ValueError(f'{key}.ema.interval must be an integer >= 1, got {interval!r}')
    average = ExponentialMovingAverage(student, momentum, interval,
                                       update_buffers=bool(ema.get('update_buffers', False)))
    average.module.eval()
    return average

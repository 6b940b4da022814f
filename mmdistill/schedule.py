"""Per-entry loss-weight schedules: linear warm-up, linear decay, stop.

A ``distill_losses`` entry takes ``weight_schedule=dict(...)``; its loss is multiplied every step
by :meth:`WeightSchedule.factor` of the run's progress, read from mmengine's ``MessageHub`` (no
hook to add, and a resumed run continues the schedule where it stopped). Examples::

    weight_schedule=dict(warmup=500)                     # 0 -> 1 over the first 500 iterations
    weight_schedule=dict(decay_begin=1000, decay_end=3000, decay_to=0.1)
    weight_schedule=dict(stop=280, by_epoch=True)        # mmrazor/mmyolo RTMDet: StopDistillHook

A stopped entry skips its loss (its learnable parts get zero gradients); when every entry is
stopped the teacher does not run.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from .utils.keys import check_known_keys


def hub_progress(by: str) -> int | None:
    """1-based epoch (``by='epoch'``) or iteration (``'iter'``) of the current mmengine run,
    read from ``MessageHub.get_current_instance()``; None without that info."""
    from mmengine.logging import MessageHub
    value = MessageHub.get_current_instance().get_info(by)
    if value is None:
        return None
    return int(value) + 1


@dataclass(frozen=True)
class WeightSchedule:
    """Multiplier of one entry's loss as a function of the 1-based step ``p``.

    Args:
        warmup: linear warm-up ``min(p / warmup, 1)`` (0: none).
        decay_begin: from this step the factor falls linearly ...
        decay_end: ... to ``decay_to`` at this step, and stays there.
        decay_to: the factor after the decay.
        stop: the loss is off (factor 0) for every step ``p > stop``: it is applied for the first
            ``stop`` steps, as mmrazor's ``StopDistillHook(stop_epoch=stop)`` does.
        by_epoch: steps are epochs (``MessageHub`` ``'epoch'``), else iterations (``'iter'``).
    """

    warmup: float = 0
    decay_begin: float | None = None
    decay_end: float | None = None
    decay_to: float = 0.0
    stop: float | None = None
    by_epoch: bool = False

    @classmethod
    def build(cls, cfg: dict, key: str) -> 'WeightSchedule':
        """A schedule from an entry's ``weight_schedule`` dict; errors name ``key``."""
        if not isinstance(cfg, dict):
            raise ValueError(f'{key}: expected a dict, got {cfg!r}')
        known = [f.name for f in fields(cls)]
        check_known_keys(cfg, known, key)
        sched = cls(**cfg)
        if sched.warmup < 0:
            raise ValueError(f'{key}.warmup must be >= 0, got {sched.warmup}')
        if (sched.decay_begin is None) != (sched.decay_end is None):
            raise ValueError(f'{key}: give both decay_begin and decay_end, or neither')
        if sched.decay_begin is not None and not sched.decay_begin < sched.decay_end:
            raise ValueError(f'{key}: decay_begin ({sched.decay_begin}) must be < decay_end '
                             f'({sched.decay_end})')
        return sched

    @property
    def unit(self) -> str:
        return 'epoch' if self.by_epoch else 'iter'

    def factor(self, step: int) -> float:
        """The multiplier at the 1-based ``step``."""
        if self.stop is not None and step > self.stop:
            return 0.0
        value = min(step / self.warmup, 1.0) if self.warmup > 0 else 1.0
        if self.decay_begin is not None and step > self.decay_begin:
            t = min((step - self.decay_begin) / (self.decay_end - self.decay_begin), 1.0)
            value *= 1.0 + t * (self.decay_to - 1.0)
        return value

    def current(self) -> float:
        """The multiplier at the run's current step; 1 outside an mmengine run."""
        step = hub_progress(self.unit)
        return 1.0 if step is None else self.factor(step)

"""The student's normalised inputs turned into the teacher's (each keeps its own preprocessor)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Renormalisation:
    """Turns the student's normalised inputs into the teacher's: undo the student's mean/std,
    flip the channel order if only one of them converts BGR to RGB, apply the teacher's."""

    student_mean: torch.Tensor | None
    student_std: torch.Tensor | None
    flip: bool
    teacher_mean: torch.Tensor | None
    teacher_std: torch.Tensor | None

    @staticmethod
    def _stats(pre: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
        """``(mean, std, converts BGR to RGB)`` of a data preprocessor (None: no normalising)."""
        mean = getattr(pre, 'mean', None) if getattr(pre, '_enable_normalize', False) else None
        std = getattr(pre, 'std', None) if mean is not None else None
        flip = (getattr(pre, '_channel_conversion', None)  # mmengine, mmdet
                or getattr(pre, 'to_rgb', None)  # mmpretrain
                or getattr(pre, 'channel_conversion', False))  # mmseg
        return mean, std, bool(flip)

    @classmethod
    def between(cls, student_pre: nn.Module, teacher_pre: nn.Module) -> Renormalisation | None:
        """None when both data preprocessors normalise the same way."""
        (ms, ss, cs), (mt, st, ct) = cls._stats(student_pre), cls._stats(teacher_pre)
        same = (cs == ct and (ms is None) == (mt is None)
                and (ms is None or (torch.equal(ms, mt) and torch.equal(ss, st))))
        return None if same else cls(ms, ss, cs != ct, mt, st)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs if self.student_mean is None else \
            inputs * self.student_std.to(inputs) + self.student_mean.to(inputs)
        if self.flip:
            x = x.flip(1)
        return x if self.teacher_mean is None else \
            (x - self.teacher_mean.to(x)) / self.teacher_std.to(x)

"""Balanced loss weights, measured on the first training iterations: ``auto_weight``.

A ``distill_losses`` entry with ``auto_weight=dict(share=0.25, iters=20)`` gets a multiplier
``w`` set so that its weighted gradient is ``share`` times the task's, in norm. Over the first
``iters`` training iterations ``k``, with ``L_i`` the entry's loss as configured (its own weights
included) and ``L_task`` the student's own losses, the gradient norms over the student's
trainable parameters (as :class:`~mmdistill.hooks.DistillBalanceHook` measures them) are summed,
each first averaged over the ranks::

    T_k = sum_{j<=k} ||dL_task/dtheta||_j        E_k = sum_{j<=k} ||dL_i/dtheta||_j
    w_k = share * T_k / E_k

Step ``k <= iters`` trains with ``w_k`` (the first step is already balanced), every later step
with ``w_iters``, held fixed. The sums, the step count and ``w`` are buffers of the distiller:
equal on every rank, written in checkpoints, so a resumed run keeps the weight (or resumes the
measurement where it stopped). FGD's author advises a distillation loss about the size of the
task loss (yzd-v/FGD#11); this sets the gradient, what the step feels, instead of the value.
"""
from __future__ import annotations

import math

import torch
from mmengine.dist import all_reduce
from mmengine.logging import print_log
from torch import nn

from .utils.keys import check_known_keys

AUTO_WEIGHT_KEYS = ('share', 'iters')


def check_auto_weight(cfg: object, key: str) -> dict:
    """Validate an entry's ``auto_weight`` dict; errors name ``key``."""
    if not isinstance(cfg, dict):
        raise ValueError(f'{key}: expected dict(share=0.25, iters=20), got {cfg!r}')
    check_known_keys(cfg, AUTO_WEIGHT_KEYS, key)
    share, iters = cfg.get('share', 0.25), cfg.get('iters', 20)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0 \
            or not math.isfinite(share):
        raise ValueError(f'{key}.share must be a finite number > 0, got {share!r}')
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f'{key}.iters must be an integer >= 1, got {iters!r}')
    return dict(share=float(share), iters=iters)


class AutoWeight(nn.Module):
    """The measured multiplier of one entry (see the module docstring).

    Args:
        share: target ratio ``w * ||g_entry|| / ||g_task||``.
        iters: training iterations measured before ``w`` is held fixed.
        key: the entry's config key, for messages.
        base_weight: the loss weight the entry is configured with (its ``loss_weight``, applied
            by the wrapper or by the loss), for the config line that reproduces ``w``.
    """

    def __init__(self, share: float, iters: int, key: str, base_weight: float = 1.0) -> None:
        super().__init__()
        self.share, self.iters, self.key, self.base_weight = share, iters, key, base_weight
        self.register_buffer('task_norm_sum', torch.zeros((), dtype=torch.float64))
        self.register_buffer('loss_norm_sum', torch.zeros((), dtype=torch.float64))
        self.register_buffer('steps', torch.zeros((), dtype=torch.int64))
        self.register_buffer('weight', torch.zeros((), dtype=torch.float64))

    @property
    def measuring(self) -> bool:
        """Whether the next training step still measures."""
        return int(self.steps) < self.iters

    def update(self, task_norm: float, loss_norm: float) -> float:
        """Add one step's gradient norms (averaged over the ranks); return the new weight."""
        norms = torch.tensor([task_norm, loss_norm], dtype=torch.float64)
        all_reduce(norms, op='mean')  # one process: unchanged
        if not torch.isfinite(norms).all():
            raise FloatingPointError(
                f'{self.key}.auto_weight: non-finite gradient norm at measured step '
                f'{int(self.steps) + 1} (task {float(norms[0])}, loss {float(norms[1])})')
        self.task_norm_sum += norms[0].to(self.task_norm_sum)
        self.loss_norm_sum += norms[1].to(self.loss_norm_sum)
        self.steps += 1
        if float(self.loss_norm_sum) > 0:
            self.weight.fill_(self.share * float(self.task_norm_sum) / float(self.loss_norm_sum))
        elif not self.measuring:
            raise ValueError(f'{self.key}.auto_weight: the loss gave the student no gradient '
                             f'in {self.iters} iterations; nothing to balance')
        if not self.measuring:
            print_log(f'{self.key}.auto_weight: weight {float(self.weight):.6g} measured over '
                      f'{self.iters} iterations (share {self.share}); to fix it: '
                      f'{self.config_line()}', logger='current')
        return float(self.weight)

    def config_line(self) -> str:
        """The ``loss_weight`` that reproduces the measured weight without ``auto_weight``."""
        return f'loss_weight={self.base_weight * float(self.weight):.6g}'

    def extra_repr(self) -> str:
        return (f'share={self.share}, iters={self.iters}, steps={int(self.steps)}, '
                f'weight={float(self.weight):.6g}')

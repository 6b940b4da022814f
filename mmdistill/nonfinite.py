"""What happens when a training step's losses are not finite: stop (default) or skip the step.

A distiller checks its losses at the end of every training-mode ``loss`` call, before backward and
before the optimizer: one ``isfinite`` over all of them (one device synchronisation a step on a
GPU; mmengine's logger reads every loss with ``.item()`` each step anyway). A non-finite step
raises :class:`NonFiniteLossError`, naming the iteration, the loss entry, the tapped level and
which input was not finite (the teacher's tapped tensor, the student's, or the loss itself), with
what to try; the weights are untouched and the last checkpoint is the last good state.

``non_finite=dict(action='skip', max_in_a_row=5)`` skips such steps instead, as mixed-precision
training skips overflowing ones: the step raises :class:`SkippedStep`, which the train loops of
:class:`~mmdistill.engine.DistillRunner` catch (no backward, no optimizer step; the skip is
counted and logged as ``nonfinite_skipped``); more than ``max_in_a_row`` skipped steps in a row
stop the run with :class:`NonFiniteLossError`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.logging import MessageHub, print_log

from .utils.keys import check_known_keys

ACTIONS = ('stop', 'skip')
ADVICE = ('What to try: the teacher in fp32 or bf16 (teacher_autocast=None or \'bf16\') instead '
          'of fp16; a smaller loss_weight (DistillBalanceHook logs each loss against the task '
          'loss); a lower learning rate.')


class NonFiniteLossError(RuntimeError):
    """A training step's loss is NaN or infinite; the step did not reach the optimizer."""


class SkippedStep(NonFiniteLossError):
    """A non-finite step skipped under ``non_finite=dict(action='skip')``; DistillRunner's train
    loops catch it and go on (under another runner it stops the run)."""


def all_finite(values: Iterable[Any]) -> bool:
    """Whether every tensor (or list of tensors) in ``values`` is finite: one synchronisation."""
    flat = [t.detach().float().sum() for v in values
            for t in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(t, torch.Tensor)]
    return not flat or bool(torch.isfinite(torch.stack(flat)).all())


def describe(value: Any) -> str:
    """'nan', 'inf' or '-inf' (the first non-finite element of a tensor or list of tensors)."""
    for t in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(t, torch.Tensor) and not bool(torch.isfinite(t).all()):
            bad = t.detach().float().flatten()
            return str(float(bad[~torch.isfinite(bad)][0]))
    return 'finite'


class NonFiniteGuard:
    """The check of one distiller's losses and its action (``non_finite`` of the config).

    Args:
        action: 'stop' (raise :class:`NonFiniteLossError`) or 'skip' (raise
            :class:`SkippedStep`, caught by DistillRunner's loops).
        max_in_a_row: with 'skip', the run stops at the ``max_in_a_row + 1``-th non-finite step
            in a row.
    """

    def __init__(self, action: str = 'stop', max_in_a_row: int = 5) -> None:
        if action not in ACTIONS:
            raise ValueError(f'model.non_finite.action must be one of {list(ACTIONS)}, got '
                             f'{action!r}')
        if not isinstance(max_in_a_row, int) or max_in_a_row < 0:
            raise ValueError('model.non_finite.max_in_a_row must be an integer >= 0, got '
                             f'{max_in_a_row!r}')
        self.action, self.max_in_a_row = action, max_in_a_row
        self.in_a_row = 0
        self.skipped = 0

    @classmethod
    def build(cls, cfg: str | Mapping | None) -> 'NonFiniteGuard':
        """From the config's ``non_finite``: None or 'stop', 'skip', or a dict of the args."""
        if cfg is None or isinstance(cfg, str):
            return cls(cfg or 'stop')
        if not isinstance(cfg, Mapping):
            raise ValueError(f"model.non_finite: expected 'stop', 'skip' or dict(action=..., "
                             f'max_in_a_row=...), got {cfg!r}')
        check_known_keys(cfg, ('action', 'max_in_a_row'), 'model.non_finite')
        return cls(**cfg)

    def check(self, losses: Mapping[str, Any], explain: Callable[[], list[str]]) -> None:
        """Raise when ``losses`` are not all finite; ``explain()`` gives the lines that say where
        (called only then). Skipping ranks agree: a step any rank skips, every rank skips."""
        finite = here = all_finite(losses.values())
        if self.action == 'skip' and get_world_size() > 1:
            device = next((v.device for v in losses.values() if isinstance(v, torch.Tensor)),
                          torch.device('cpu'))
            flag = torch.tensor(float(finite), device=device)
            all_reduce(flag, op='min')
            finite = bool(flag)
        if finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        step = MessageHub.get_current_instance().get_info('iter')
        where = f'iteration {step + 1}' if step is not None else 'this step'
        lines = explain() if not here else ["another rank's losses are non-finite"]
        message = (f'non-finite loss at {where}; the step did not reach the optimizer, the '
                   'weights are unchanged:\n  ' + '\n  '.join(lines) + '\n' + ADVICE)
        if self.action == 'skip' and self.in_a_row <= self.max_in_a_row:
            self.skipped += 1
            MessageHub.get_current_instance().update_scalar('train/nonfinite_skipped',
                                                            self.skipped)
            print_log(f'skipping the step ({self.in_a_row} in a row, {self.skipped} in all; the '
                      f'run stops after {self.max_in_a_row} in a row): {message}',
                      logger='current', level=30)
            raise SkippedStep(message)
        if self.action == 'skip':
            message = (f'{self.in_a_row} non-finite steps in a row (more than '
                       f'non_finite.max_in_a_row={self.max_in_a_row}): {message}')
        raise NonFiniteLossError(message)

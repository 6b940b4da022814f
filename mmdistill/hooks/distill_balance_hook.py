"""Log how each distillation loss balances against the task loss, per step and per entry."""
from __future__ import annotations

import json
import logging
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..analysis import loss_balance
from ..distiller import distiller_of


@HOOKS.register_module()
class DistillBalanceHook(Hook):
    """Log ``ratio_<entry>`` (distillation loss / task loss) every ``interval`` iterations and
    the gradient statistics of :func:`mmdistill.analysis.loss_balance` (``grad_norm_*``,
    ``grad_share_*``, ``grad_cos_*``) every ``grad_interval`` iterations (they cost one extra
    backward pass per loss).

    The values go to mmengine's message hub as ``train/<key>`` scalars, so the logger prints them
    and every visualizer backend (TensorBoard, W&B, ...) receives them at the logger's interval;
    each measured step is also a line of ``<work_dir>/<out_file>`` (json, written by the main
    process). Under DDP they describe the main process's own batch. Add it with
    ``custom_hooks = [dict(type='DistillBalanceHook', interval=1, grad_interval=50)]``.

    With ``warn_ratio``, an entry whose ratio stays above it for ``warn_steps`` consecutive
    measured steps is logged as a warning, once until its ratio comes back under the threshold,
    with the ``loss_weight`` that would bring it to ``warn_ratio`` (its weight x ``warn_ratio``
    / ratio).
    """

    priority = 'NORMAL'  # before the LoggerHook (BELOW_NORMAL) logs this iteration

    def __init__(self, interval: int = 1, grad_interval: int = 50,
                 out_file: str | None = 'distill_balance.jsonl', warn_ratio: float | None = None,
                 warn_steps: int = 10) -> None:
        if interval < 1 or grad_interval < 0:
            raise ValueError('DistillBalanceHook: interval must be >= 1 and grad_interval >= 0 '
                             f'(0: no gradient statistics), got {interval}, {grad_interval}')
        if (warn_ratio is not None and not warn_ratio > 0) or warn_steps < 1:
            raise ValueError('DistillBalanceHook: warn_ratio must be > 0 (or None: no warning) '
                             f'and warn_steps >= 1, got {warn_ratio}, {warn_steps}')
        self.interval = interval
        self.grad_interval = grad_interval
        self.out_file = out_file
        self.warn_ratio = warn_ratio
        self.warn_steps = warn_steps
        self._steps_above: dict[str, int] = {}  # per entry: consecutive measured steps above
        self._measure: str | None = None  # 'ratios' or 'grads' while a step measures
        self._stats: dict[str, float] | None = None  # what it measured

    def before_train(self, runner) -> None:
        model = distiller_of(runner.model)
        if model is not None:
            model.loss_observers.append(self._observe)
            self._params = model.student.parameters
            self._entries = model.entries

    def _observe(self, task_losses: dict, distill_losses: dict) -> None:
        """The distiller's loss observer: measure the step :meth:`before_train_iter` chose."""
        if self._measure is not None:
            self._stats = loss_balance(task_losses, distill_losses, self._params(),
                                       grads=self._measure == 'grads')
            self._measure = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        step = runner.iter + 1
        grads = self.grad_interval > 0 and (step % self.grad_interval == 0 or step == 1)
        if grads or step % self.interval == 0:
            self._measure = 'grads' if grads else 'ratios'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._stats is None:
            return
        stats, self._stats = self._stats, None
        if self.warn_ratio is not None:
            self.warn_exploding(stats, {e.name: e.weight for e in self._entries}, runner.iter + 1)
        for key, value in stats.items():
            runner.message_hub.update_scalar(f'train/{key}', value)
        if self.out_file and is_main_process():
            with open(osp.join(runner.work_dir, self.out_file), 'a') as f:
                f.write(json.dumps(dict(iter=runner.iter + 1, **stats)) + '\n')

    def warn_exploding(self, stats: dict[str, float], weights: dict[str, float],
                       step: int) -> list[str]:
        """Count one measured step of ``stats`` (``ratio_<entry>``) per entry and log a warning
        for each entry whose ratio has now been above ``warn_ratio`` for ``warn_steps``
        consecutive measured steps (once until it falls back); ``weights``: each entry's
        ``loss_weight``. Returns the warnings."""
        warnings = []
        for name, weight in weights.items():
            ratio = stats.get(f'ratio_{name}')
            if ratio is None:
                continue
            above = self._steps_above.get(name, 0) + 1 if ratio > self.warn_ratio else 0
            self._steps_above[name] = above
            if above == self.warn_steps:
                restoring = weight * self.warn_ratio / ratio
                warnings.append(
                    f'DistillBalanceHook: loss_{name} has been above {self.warn_ratio:g}x the '
                    f'task loss for {above} measured steps (iteration {step}: ratio {ratio:.4g}); '
                    f'model.distill_losses.{name}.loss_weight={restoring:.4g} (now {weight:g}) '
                    f'would bring it back to {self.warn_ratio:g}')
        for message in warnings:
            print_log(message, logger='current', level=logging.WARNING)
        return warnings

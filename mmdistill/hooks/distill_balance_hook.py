"""Log how each distillation loss balances against the task loss, per step and per entry."""
from __future__ import annotations

import json
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
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
    """

    priority = 'NORMAL'  # before the LoggerHook (BELOW_NORMAL) logs this iteration

    def __init__(self, interval: int = 1, grad_interval: int = 50,
                 out_file: str | None = 'distill_balance.jsonl') -> None:
        if interval < 1 or grad_interval < 0:
            raise ValueError('DistillBalanceHook: interval must be >= 1 and grad_interval >= 0 '
                             f'(0: no gradient statistics), got {interval}, {grad_interval}')
        self.interval = interval
        self.grad_interval = grad_interval
        self.out_file = out_file
        self._measure: str | None = None  # 'ratios' or 'grads' while a step measures
        self._stats: dict[str, float] | None = None  # what it measured

    def before_train(self, runner) -> None:
        model = distiller_of(runner.model)
        if model is not None:
            model.loss_observers.append(self._observe)
            self._params = model.student.parameters

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
        for key, value in stats.items():
            runner.message_hub.update_scalar(f'train/{key}', value)
        if self.out_file and is_main_process():
            with open(osp.join(runner.work_dir, self.out_file), 'a') as f:
                f.write(json.dumps(dict(iter=runner.iter + 1, **stats)) + '\n')

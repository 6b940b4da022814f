"""mmengine hook driving CTKD's curriculum (Li et al., AAAI 2023; zhengli97/CTKD)."""
from __future__ import annotations

import math

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from mmdistill.losses.ctkd import GlobalTemperature


def cosine_lambda(loop: int, max_lambda: float, min_lambda: float, decay_loops: float) -> float:
    """CTKD's cosine curriculum for the gradient-reversal strength.

    ``lambda = min + 0.5 * (max - min) * (1 + cos(pi + pi * loop / decay_loops))`` with ``loop``
    clipped to [0, decay_loops]: ``min`` at loop 0, ``max`` from ``decay_loops`` on. This is the
    official ``CosineDecay(max_value=0, min_value=-1, num_loops)`` value negated (the official
    GRL multiplies by that negative value; ours multiplies by ``-lambda``).

    Args:
        loop: 1-based epoch (or iteration) index, as the official ``get_value(epoch)``.
        max_lambda: value reached at ``decay_loops``.
        min_lambda: value at loop 0.
        decay_loops: length of the curriculum; <= 0 means ``max_lambda`` at once.
    """
    if decay_loops <= 0:
        return float(max_lambda)
    i = min(max(loop, 0), decay_loops)
    cos = math.cos(math.pi + math.pi * i / decay_loops)
    return min_lambda + 0.5 * (max_lambda - min_lambda) * (1.0 + cos)


@HOOKS.register_module()
class CTKDTemperatureHook(Hook):
    """Sets ``lambda_`` of every CTKD temperature in the model before each train epoch (or
    iteration), following :func:`cosine_lambda` with the 1-based loop index ``runner.epoch + 1``
    (``runner.iter + 1`` when ``by_epoch=False``), as the official loop calls
    ``get_value(epoch)`` with epochs from 1.

    Official CIFAR settings: ``decay_loops=10`` (ImageNet 5), lambda 0 -> 1.

    Args:
        max_lambda: final gradient-reversal strength.
        min_lambda: initial strength.
        decay_loops: epochs (iterations when ``by_epoch=False``) of the curriculum.
        by_epoch: update per epoch (True) or per iteration.
    """

    priority = 'NORMAL'

    def __init__(self,
                 max_lambda: float = 1.0,
                 min_lambda: float = 0.0,
                 decay_loops: float = 10,
                 by_epoch: bool = True) -> None:
        self.max_lambda = max_lambda
        self.min_lambda = min_lambda
        self.decay_loops = decay_loops
        self.by_epoch = by_epoch

    @staticmethod
    def _temperatures(runner) -> list[GlobalTemperature]:
        model: nn.Module = runner.model
        if hasattr(model, 'module'):  # DDP / mmengine model wrappers
            model = model.module
        return [m for m in model.modules() if isinstance(m, GlobalTemperature)]

    def _set(self, runner, loop: int) -> None:
        value = cosine_lambda(loop, self.max_lambda, self.min_lambda, self.decay_loops)
        for module in self._temperatures(runner):
            module.lambda_ = value

    def before_train(self, runner) -> None:
        if not self._temperatures(runner):
            raise RuntimeError('CTKDTemperatureHook: the model has no CTKD temperature '
                               '(no CTKDLoss / GlobalTemperature module); remove the hook '
                               'or add a CTKDLoss entry to distill_losses.')

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self._set(runner, runner.epoch + 1)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self.by_epoch:
            self._set(runner, runner.iter + 1)

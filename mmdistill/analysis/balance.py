"""Loss balance: each distillation loss against the task loss, in value and in gradient.

For the student's parameters ``theta``, the task loss ``L_task`` (the student's own losses) and
the distillation entries ``L_i`` (weighted, as trained), with gradients ``g_x = dL_x / dtheta``
and their sum ``g = g_task + sum_i g_i`` (the student's gradient of this step, on this process,
unscaled, before clipping; the loss modules' own parameters are left out):

- ``ratio_i = L_i / L_task``;
- ``grad_norm_x = ||g_x||``;
- ``grad_share_x = <g_x, g> / ||g||^2``: the part of the step that ``x`` contributes along the
  step's direction; the shares sum to 1, and a negative share works against the step;
- ``grad_cos_i = cos(g_i, g_task)``: below 0, the entry pulls against the task.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor


def sum_losses(losses: Mapping[str, Tensor | list[Tensor]]) -> Tensor:
    """Sum the entries whose key contains ``'loss'``, as mmengine's ``parse_losses`` does."""
    total = 0.
    for key, value in losses.items():
        if 'loss' not in key:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            total = total + v.mean()
    return torch.as_tensor(total)


def _grads(loss: Tensor, params: list[Tensor]) -> list[Tensor]:
    if not loss.requires_grad:
        return [torch.zeros_like(p) for p in params]
    # taken inside the forward, so under its autocast (--amp): a backward runs in the dtypes its
    # forward recorded, never autocast again
    with torch.autocast(loss.device.type, enabled=False):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def grad_norm(loss: Tensor, params: list[Tensor]) -> float:
    """``||d loss / d params||`` (float64 sum of squares), the graph kept for the step's
    backward: the norm :func:`loss_balance` reports as ``grad_norm_<name>``."""
    grads = _grads(loss, params)
    return math.sqrt(_dot(grads, grads))


def loss_balance(task_losses: Mapping[str, Tensor | list[Tensor]],
                 distill_losses: Mapping[str, Tensor], params: Iterable[Tensor],
                 grads: bool = False) -> dict[str, float]:
    """Balance statistics of one step (see the module docstring).

    Args:
        task_losses: the student's own loss dict (mmengine's ``'loss'`` key rule).
        distill_losses: ``{'loss_<name>': weighted scalar}``.
        params: the student's trainable parameters.
        grads: also compute the gradient statistics (one extra backward pass per loss, the
            graph kept).

    Returns:
        ``{'ratio_<name>': ..., }`` and with ``grads`` ``'grad_norm_task'``, ``'grad_share_task'``,
        ``'grad_norm_<name>'``, ``'grad_share_<name>'``, ``'grad_cos_<name>'``.
    """
    task = sum_losses(task_losses)
    task_value = float(task.detach())
    names = {key: key[len('loss_'):] if key.startswith('loss_') else key for key in distill_losses}
    if 'task' in names.values():
        raise ValueError("loss_balance: a distillation entry named 'task' would hide the task loss")
    out = {}
    for key, name in names.items():
        value = float(distill_losses[key].detach())
        out[f'ratio_{name}'] = value / task_value if task_value != 0 else math.nan
    if not grads:
        return out
    params = [p for p in params if p.requires_grad]
    per_loss = {'task': _grads(task, params)}
    per_loss.update({name: _grads(distill_losses[key], params) for key, name in names.items()})
    total = [sum(gs) for gs in zip(*per_loss.values())]
    total_sq = _dot(total, total)
    norm_task = math.sqrt(_dot(per_loss['task'], per_loss['task']))
    for name, g in per_loss.items():
        norm = math.sqrt(_dot(g, g))
        out[f'grad_norm_{name}'] = norm
        out[f'grad_share_{name}'] = _dot(g, total) / total_sq if total_sq > 0 else math.nan
        if name != 'task':
            denom = norm * norm_task
            out[f'grad_cos_{name}'] = _dot(g, per_loss['task']) / denom if denom > 0 else math.nan
    return out

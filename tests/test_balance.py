"""Loss balance: values against gradients computed one loss at a time, and the hook in a run."""
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.model import BaseModel

from mmdistill.analysis import loss_balance, sum_losses


def _problem():
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    x = torch.randn(8, 5)
    y = x @ w + b
    task = dict(loss_a=y.square().mean(), loss_b=[y.abs().mean(), y.sum() * 0.01], acc=y.mean())
    distill = dict(loss_pull=(y - 1).square().mean() * 0.5, loss_push=-(y.mean()) * 0.3)
    return (w, b), x, task, distill


def _grad(fn, params):
    """The gradient of one loss, from a fresh graph and .backward() (not autograd.grad)."""
    for p in params:
        p.grad = None
    fn().backward()
    return torch.cat([p.grad.flatten() for p in params]).double()


def test_sum_losses_follows_mmengine_parse_losses():
    _, _, task, _ = _problem()
    loss, _ = BaseModel.parse_losses(None, task)
    torch.testing.assert_close(sum_losses(task), loss)


def test_ratios_and_gradient_statistics():
    params, x, task, distill = _problem()
    stats = loss_balance(task, distill, params, grads=True)
    task_value = float(sum_losses(task))
    for name in ('pull', 'push'):
        assert stats[f'ratio_{name}'] == pytest.approx(float(distill[f'loss_{name}']) / task_value)

    def fresh(key):
        w, b = params
        y = x @ w + b
        if key == 'task':
            return y.square().mean() + y.abs().mean() + y.sum() * 0.01
        return (y - 1).square().mean() * 0.5 if key == 'pull' else -(y.mean()) * 0.3

    g = {k: _grad(lambda k=k: fresh(k), params) for k in ('task', 'pull', 'push')}
    total = g['task'] + g['pull'] + g['push']
    for k, gk in g.items():
        assert stats[f'grad_norm_{k}'] == pytest.approx(float(gk.norm()), rel=1e-6)
        assert stats[f'grad_share_{k}'] == pytest.approx(float(gk @ total / (total @ total)),
                                                         rel=1e-6)
    for k in ('pull', 'push'):
        cos = float(g[k] @ g['task'] / (g[k].norm() * g['task'].norm()))
        assert stats[f'grad_cos_{k}'] == pytest.approx(cos, rel=1e-6)
    assert sum(stats[f'grad_share_{k}'] for k in g) == pytest.approx(1.0)
    assert 'grad_cos_task' not in stats
    # ratios only: no gradient is taken, the graph is left as it was
    assert set(loss_balance(task, distill, params)) == {'ratio_pull', 'ratio_push'}


def test_loss_without_gradient_path_has_zero_share():
    params, _, task, distill = _problem()
    distill['loss_const'] = torch.tensor(2.0)
    stats = loss_balance(task, distill, params, grads=True)
    assert stats['grad_norm_const'] == 0 and stats['grad_share_const'] == 0
    assert math.isnan(stats['grad_cos_const'])


def test_hook_warns_once_per_episode_with_the_weight_that_restores_the_threshold(monkeypatch):
    import logging

    import mmdistill.hooks.distill_balance_hook as module
    logged = []
    monkeypatch.setattr(module, 'print_log', lambda msg, logger, level: logged.append(
        (msg, level)))
    hook = module.DistillBalanceHook(warn_ratio=2.0, warn_steps=3)
    weights = dict(kd=0.9, fgd=1.0, at=0.5)
    kd = [3, 3, 2.5, 4, 1, 3, 3, 5]        # above 3 steps at step 3 and again at step 8
    fgd = [1.5] * 8                         # below the threshold
    at = [3, 3, 1, 3, 3, 2, 3, 3]           # never 3 consecutive steps above (2 is not above)
    warned = {}
    for step, ratios in enumerate(zip(kd, fgd, at), 1):
        stats = {f'ratio_{name}': r for name, r in zip(('kd', 'fgd', 'at'), ratios)}
        for message in hook.warn_exploding(stats, weights, step):
            warned[step] = message
    assert sorted(warned) == [3, 8]
    assert 'loss_kd' in warned[3] and 'ratio 2.5' in warned[3]
    assert 'model.distill_losses.kd.loss_weight=0.72 (now 0.9)' in warned[3]  # 0.9 x 2 / 2.5
    assert 'model.distill_losses.kd.loss_weight=0.36 (now 0.9)' in warned[8]  # 0.9 x 2 / 5
    assert [level for _, level in logged] == [logging.WARNING] * 2
    with pytest.raises(ValueError, match='warn_ratio must be > 0'):
        module.DistillBalanceHook(warn_ratio=0.0)


pytest.importorskip('mmpretrain')
from mmengine.config import Config  # noqa: E402

from mmdistill.engine import DistillRunner  # noqa: E402
from tests.utils import (save_teacher, tiny_classifier,  # noqa: E402
                         tiny_distill_classifier_config)
from tests.conftest import SHARED_DATA  # noqa: E402


def test_hook_logs_through_message_hub_and_visualizer(tmp_path):
    from tools.experiments.cifar import cifar_config
    teacher = str(tmp_path / 'teacher.pth')
    save_teacher(tiny_classifier(16), teacher, scope='mmpretrain')
    model = tiny_distill_classifier_config(teacher)
    hooks = [dict(type='DistillBalanceHook', interval=1, grad_interval=2, warn_ratio=1e-4,
                  warn_steps=2),
             dict(type='DumpLossesHook')]
    cfg = cifar_config(model, osp.join(SHARED_DATA, 'cifar10'), str(tmp_path / 'run'), 4, 8,
                       0.05, 'balance', progress=False, extra_hooks=hooks)
    cfg['default_hooks']['logger']['interval'] = 1
    runner = DistillRunner.from_cfg(Config(cfg))
    runner.train()
    with open(osp.join(runner.work_dir, 'distill_balance.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    with open(osp.join(runner.work_dir, 'losses_rank0.jsonl')) as f:
        dumped = [json.loads(line) for line in f]
    assert [r['iter'] for r in rows] == [1, 2, 3, 4]
    assert [('grad_share_kd' in r) for r in rows] == [True, True, False, True]
    for row, dump in zip(rows, dumped):
        # mmpretrain's head logs its cross-entropy as 'loss', which replaces mmengine's total
        # of the same name in the log dict: the logged 'loss' is the task loss here.
        task = dump['loss']
        assert row['ratio_kd'] == pytest.approx(dump['loss_kd'] / task, rel=1e-5)
    grads = rows[0]
    assert grads['grad_share_task'] + grads['grad_share_kd'] == pytest.approx(1.0)
    assert grads['grad_norm_kd'] > 0 and -1 <= grads['grad_cos_kd'] <= 1
    # mmengine's logger and visualizer backends received them as train scalars
    assert 'train/ratio_kd' in runner.message_hub.log_scalars
    scalars = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
    with open(scalars) as f:
        logged = [r for r in map(json.loads, f) if 'loss_kd' in r]  # the training lines
    assert [r['ratio_kd'] for r in logged] == pytest.approx([r['ratio_kd'] for r in rows])
    assert logged[0]['grad_share_kd'] == pytest.approx(rows[0]['grad_share_kd'])
    # warn_ratio: KD (about 3e-4 x the task loss) is above 1e-4 since step 1; one warning, at step 2
    with open(osp.join(runner.log_dir, osp.basename(runner.log_dir) + '.log')) as f:
        warnings = [line for line in f if 'DistillBalanceHook: loss_kd' in line]
    weight = 0.9 * 1e-4 / rows[1]['ratio_kd']
    assert len(warnings) == 1 and f'loss_weight={weight:.4g} (now 0.9)' in warnings[0]

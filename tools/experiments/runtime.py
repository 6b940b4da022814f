"""What every experiment shares: an iteration-based CPU runtime, train-then-test, seeded inits."""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import os.path as osp
import sys
import time

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


_CONSOLE: list = []  # the stdout of the outermost quiet() (stdout itself outside one)


def console():
    """Where progress goes: the real stdout, also while :func:`quiet` silences the rest."""
    return _CONSOLE[0] if _CONSOLE else sys.stdout


@HOOKS.register_module()
class ProgressHook(Hook):
    """Show a run's progress: a tqdm bar with ETA on a terminal (stderr), else one short line
    every ``interval`` iterations (logs, CI). :meth:`finish` ends the bar with the result."""

    def __init__(self, name: str, interval: int = 50, bar: bool | None = None) -> None:
        self.name, self.interval = name, interval
        self.bar = sys.stderr.isatty() if bar is None else bar
        self._tqdm = None
        self._start = time.time()

    def before_train(self, runner) -> None:
        self._start = time.time()
        if self.bar:
            from tqdm import tqdm
            self._tqdm = tqdm(total=runner.max_iters, initial=runner.iter, desc=self.name,
                              dynamic_ncols=True, leave=True)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        it = runner.iter + 1
        loss = float(torch.as_tensor((outputs or {}).get('loss', float('nan'))).detach())
        if self._tqdm is not None:
            self._tqdm.update(1)
            if it % self.interval == 0:
                self._tqdm.set_postfix_str(f'loss {loss:.3f}')
        elif it % self.interval == 0 or it == runner.max_iters:
            parts = ' '.join(f'{k} {float(v.detach()):.3f}' for k, v in (outputs or {}).items())
            print(f'[run]   {self.name} iter {it}/{runner.max_iters}  {parts}  '
                  f'({time.time() - self._start:.0f} s)', file=console(), flush=True)

    def finish(self, result: str) -> None:
        """End the bar (or print a line) with ``result``."""
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(result)
            self._tqdm.close()
            self._tqdm = None
        else:
            print(f'[run] {self.name}: {result}', file=console(), flush=True)


@HOOKS.register_module()
class ValCurveHook(Hook):
    """Append every validation's metrics, with the iteration, to ``<work_dir>/val_curve.jsonl``."""

    def after_val_epoch(self, runner, metrics=None) -> None:
        row = {k: float(v) for k, v in (metrics or {}).items()}
        with open(osp.join(runner.work_dir, 'val_curve.jsonl'), 'a') as f:
            f.write(json.dumps(dict(iter=runner.iter, **row)) + '\n')


def iter_runtime(iters: int, name: str, seed: int = 0, val_interval: int | None = None,
                 progress: bool = True, extra_hooks: list | None = None) -> dict:
    """The runtime part of a short iteration-based CPU run: loops, hooks (a progress line every
    tenth of the run, one checkpoint at the end), env, quiet logging.

    ``val_interval`` validates during training (each result appended to ``val_curve.jsonl``).
    """
    interval = max(iters // 10, 1)
    hooks = [dict(type='ProgressHook', name=name, interval=interval)] if progress else []
    if val_interval:
        hooks.append(dict(type='ValCurveHook'))
    hooks += list(extra_hooks or [])
    return dict(
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters,
                       val_interval=val_interval or iters + 1),
        val_cfg=dict(type='ValLoop'), test_cfg=dict(type='TestLoop'),
        default_hooks=dict(timer=dict(type='IterTimerHook'),
                           logger=dict(type='LoggerHook', interval=interval),
                           param_scheduler=dict(type='ParamSchedulerHook'),
                           checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                           interval=iters, max_keep_ckpts=1),
                           sampler_seed=dict(type='DistSamplerSeedHook')),
        custom_hooks=hooks,
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
                     dist_cfg=dict(backend='gloo')),
        log_processor=dict(by_epoch=False), log_level='WARNING',
        randomness=dict(seed=seed), launcher='none')


@contextlib.contextmanager
def quiet():
    """Silence stdout (pycocotools' banners and summaries) and mmengine's console logger below
    errors; :func:`console` still reaches the real stdout."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    _CONSOLE.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        _CONSOLE.pop()
        logger.setLevel(level)


def train_and_test(cfg: dict, name: str, metric: str = 'coco/bbox_mAP',
                   defaults: dict | None = None) -> dict:
    """Train ``cfg`` with :class:`DistillRunner`, test it, save its weights only; quietly: the
    :class:`ProgressHook` of the config shows progress and ends with ``metric``.

    Returns the test metrics (``defaults`` first: an undertrained detector may detect nothing
    above the score threshold, so its COCO metric returns nothing), ``seconds`` and ``ckpt``, the
    path of ``{'state_dict': ...}`` written to ``<work_dir>/weights.pth`` (what a teacher is
    loaded from).
    """
    from mmengine.config import Config

    from mmdistill.engine import DistillRunner
    start = time.time()
    with quiet():
        runner = DistillRunner.from_cfg(Config(cfg))
        runner.logger.setLevel(logging.ERROR)
        hooks = [h for h in runner.hooks if isinstance(h, ProgressHook)]
        for hook in hooks:
            hook.name = name
        runner.train()
        tested = runner.test()
    metrics = dict({} if defaults is None else defaults, **tested)
    seconds = time.time() - start
    result = f'{metric} {metrics.get(metric, float("nan")):.3f} ({seconds:.0f} s)'
    for hook in hooks:
        hook.finish(result)
    ckpt = osp.join(cfg['work_dir'], 'weights.pth')  # weights only, as a teacher is loaded
    torch.save({'state_dict': runner.model.state_dict()}, ckpt)
    return dict(metrics, ckpt=ckpt, seconds=seconds)


def save_init(model: dict, scope: str, path: str, seed: int = 0) -> str:
    """Build ``model`` in ``scope`` ('mmdet', 'mmseg', 'mmpretrain'), initialise it with
    ``torch.manual_seed(seed)`` and save ``{'state_dict': ...}`` to ``path``: the common start
    of every run of a seed, so that paired runs differ only by their losses."""
    from mmengine.registry import DefaultScope
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(scope):
        net = registry.build(model)
    net.init_weights()
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp'  # whole or absent: processes of a study share it
    torch.save({'state_dict': net.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def with_init(model: dict, ckpt: str | None) -> dict:
    """``model`` that starts from the weights in ``ckpt`` (mmengine's ``Pretrained`` init)."""
    if ckpt is None:
        return dict(model)
    return dict(model, init_cfg=dict(type='Pretrained', checkpoint=ckpt))

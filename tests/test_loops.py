"""Resume skips by index: a run resumed at iteration 6 sees the batches, and the augmentation
draws, of the uninterrupted run, across epoch ends, with mmengine's samplers and mmdet's aspect-
ratio batch sampler; with workers the order is exact. mmengine's own loop (the baseline) is not
exact on the draws, which is what this fixes."""
import copy
import random

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, MODELS
from torch.utils.data import Dataset

import mmdistill  # noqa: F401  (registers DistillRunner, the loop and the hook)
from mmdistill.engine import DistillRunner


@DATASETS.register_module(name='LoopTestAugmented', force=True)
class Augmented(Dataset):
    """Item i: its index and a draw from numpy's and python's global RNGs (an augmentation)."""

    metainfo = dict()

    def __len__(self):
        return 9

    def __getitem__(self, i):
        return dict(index=i, draw=float(np.random.rand()) + random.random())

    def get_data_info(self, i):  # for mmdet's AspectRatioBatchSampler
        return dict(width=10 + i % 3, height=11)


@MODELS.register_module(name='LoopTestToy', force=True)
class Toy(BaseModel):

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, index, draw, mode='loss', **kwargs):
        x = torch.tensor(draw, dtype=torch.float32)
        loss = (self.w * x).mean() + torch.rand(()) * 0  # draws torch's RNG too
        return dict(loss=loss)


@HOOKS.register_module(name='LoopTestRecord', force=True)
class Record(Hook):
    rows: list = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        Record.rows.append((runner.iter + 1, tuple(data_batch['index'].tolist()),
                            tuple(data_batch['draw'].tolist())))


def _config(work_dir, sampler, max_iters, runner_type, batch_sampler=None, workers=0, **extra):
    loader = dict(batch_size=2, num_workers=workers, sampler=sampler,
                  dataset=dict(type='LoopTestAugmented'), collate_fn=dict(type='default_collate'))
    if batch_sampler:
        loader['batch_sampler'] = batch_sampler
    cfg = dict(
        model=dict(type='LoopTestToy'), work_dir=work_dir, train_dataloader=loader,
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=6, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[dict(type='LoopTestRecord'), dict(type='DistillStateHook')],
        randomness=dict(seed=0), runner_type=runner_type, log_level='WARNING')
    cfg.update(extra)
    return cfg


def _run(cfg):
    from mmengine.config import Config
    from mmengine.registry import RUNNERS
    Record.rows = []
    RUNNERS.build(Config(copy.deepcopy(cfg))).train()
    return {r[0]: r[1:] for r in Record.rows}


SAMPLERS = {
    'default': (dict(type='DefaultSampler', shuffle=True), None),
    'infinite': (dict(type='InfiniteSampler', shuffle=True), None),
    'aspect-ratio': (dict(type='DefaultSampler', shuffle=True),
                     dict(type='mmdet.AspectRatioBatchSampler')),
}


@pytest.mark.parametrize('name', sorted(SAMPLERS))
def test_resume_skips_by_index_and_continues_exactly(name, tmp_path):
    sampler, batch_sampler = SAMPLERS[name]
    if batch_sampler:
        pytest.importorskip('mmdet')
        import mmdet.datasets  # noqa: F401  (registers the batch sampler)
    straight = _run(_config(str(tmp_path / 'a'), sampler, 8, 'DistillRunner', batch_sampler))
    _run(_config(str(tmp_path / 'b'), sampler, 6, 'DistillRunner', batch_sampler))
    resumed = _run(_config(str(tmp_path / 'b'), sampler, 8, 'DistillRunner', batch_sampler,
                           resume=True))
    assert sorted(resumed) == [7, 8]  # 5 batches an epoch: the skip crosses an epoch end
    assert {i: straight[i] for i in resumed} == resumed


def test_mmengine_loop_resumes_with_other_draws(tmp_path):
    """The baseline: mmengine's IterBasedTrainLoop loads the skipped batches (same order,
    augmentation drawn again), so the draws after resuming differ."""
    sampler = SAMPLERS['default'][0]
    straight = _run(_config(str(tmp_path / 'a'), sampler, 8, 'Runner'))
    _run(_config(str(tmp_path / 'b'), sampler, 6, 'Runner'))
    resumed = _run(_config(str(tmp_path / 'b'), sampler, 8, 'Runner', resume=True))
    assert [resumed[i][0] for i in resumed] == [straight[i][0] for i in resumed]
    assert [resumed[i][1] for i in resumed] != [straight[i][1] for i in resumed]


def test_with_workers_the_order_is_exact(tmp_path):
    sampler = SAMPLERS['infinite'][0]
    straight = _run(_config(str(tmp_path / 'a'), sampler, 8, 'DistillRunner', workers=2))
    _run(_config(str(tmp_path / 'b'), sampler, 6, 'DistillRunner', workers=2))
    resumed = _run(_config(str(tmp_path / 'b'), sampler, 8, 'DistillRunner', workers=2,
                           resume=True))
    assert [resumed[i][0] for i in resumed] == [straight[i][0] for i in resumed]


def test_the_runner_uses_the_loop_for_iteration_based_configs(tmp_path):
    from mmengine.config import Config
    from mmengine.runner import EpochBasedTrainLoop

    from mmdistill.engine import FastResumeIterBasedTrainLoop
    from mmdistill.engine.loops import DistillEpochBasedTrainLoop
    cfg = _config(str(tmp_path / 'a'), SAMPLERS['default'][0], 2, 'DistillRunner')
    assert type(DistillRunner.from_cfg(Config(cfg)).train_loop) is \
        FastResumeIterBasedTrainLoop
    cfg['train_cfg'] = dict(by_epoch=False, max_iters=2)
    assert type(DistillRunner.from_cfg(Config(cfg)).train_loop) is \
        FastResumeIterBasedTrainLoop
    cfg['train_cfg'] = dict(by_epoch=True, max_epochs=1)  # mmengine's, going on after a skip
    loop = DistillRunner.from_cfg(Config(cfg)).train_loop
    assert type(loop) is DistillEpochBasedTrainLoop and isinstance(loop, EpochBasedTrainLoop)

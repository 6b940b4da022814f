"""Resume that skips the trained batches by their indices: no loading, no augmentation.

mmengine's ``IterBasedTrainLoop`` resumes at iteration ``k`` by loading and discarding ``k``
batches: it pays the whole pipeline ``k`` times and draws the augmentation RNG again, so a run
with random augmentation does not continue as the uninterrupted run did. The loop here advances
the batch sampler ``k`` batches instead (only the sampler runs: indices, and for mmdet's
``AspectRatioBatchSampler`` the image sizes of the annotations) and then starts the dataloader at
batch ``k``. :class:`~mmdistill.hooks.DistillStateHook` then restores the checkpoint's RNG states
right before the first batch is loaded, so with ``num_workers=0`` the resumed run is exact.

With worker processes the sample order is exact too; the workers' own RNG (seeded by mmengine's
``worker_init_fn`` when they start) begins again from its seed, so augmentation draws differ.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS, LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import BatchSampler

from ..nonfinite import SkippedStep


class FastForwardBatchSampler:
    """A train dataloader's batch sampler that starts where the loop tells it to.

    It wraps the batch sampler the config names (``batch_sampler``, default torch's
    ``BatchSampler``). Until :meth:`start` it yields nothing, so the iterator mmengine's loop
    creates when it is built (and, with workers, its prefetch) draws no indices; after
    :meth:`start` its first iteration continues the iterator the loop advanced.

    Args:
        sampler: the index sampler (mmengine's ``InfiniteSampler``, ``DefaultSampler``, ...).
        batch_size: images per batch (per rank).
        batch_sampler: config of the wrapped batch sampler.
        drop_last: for the default ``BatchSampler``.
    """

    def __init__(self, sampler, batch_size: int, batch_sampler: dict | None = None,
                 drop_last: bool = False) -> None:
        cfg = dict(batch_sampler or dict(type=BatchSampler, drop_last=drop_last))
        self.batch_sampler = DATA_SAMPLERS.build(
            cfg, default_args=dict(sampler=sampler, batch_size=batch_size))
        self.sampler = sampler
        self.batch_size = batch_size
        self._started = False
        self._resume_at: Iterator | None = None

    def start(self, advanced: Iterator | None = None) -> None:
        """Yield batches from now on; the next iteration continues ``advanced`` if given."""
        self._started = True
        self._resume_at = advanced

    def __iter__(self):
        if not self._started:
            return
        it, self._resume_at = self._resume_at, None
        yield from (it if it is not None else self.batch_sampler)

    def __len__(self) -> int:
        return len(self.batch_sampler)


def set_epoch(dataloader, epoch: int) -> None:
    """Tell the dataloader's sampler its epoch, where mmengine's infinite iterator does."""
    sampler = dataloader.sampler
    if not hasattr(sampler, 'set_epoch'):
        sampler = getattr(dataloader.batch_sampler, 'sampler', None)
    if hasattr(sampler, 'set_epoch'):
        sampler.set_epoch(epoch)


@LOOPS.register_module()
class FastResumeIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop``; a resumed run skips the trained batches by index.

    :class:`~mmdistill.engine.DistillRunner` uses it wherever a config asks for
    ``IterBasedTrainLoop``. The trained batches are skipped before the ``before_train`` hooks
    run (mmengine skips them after ``before_train_epoch``); nothing else differs.
    """

    skips_by_index = True  # read by DistillStateHook: restore the RNG before the first batch

    def __init__(self, runner, dataloader, max_iters: int, val_begin: int = 1,
                 val_interval: int = 1000, dynamic_intervals=None) -> None:
        if isinstance(dataloader, dict):
            dataloader = fast_forward_config(dataloader)
        super().__init__(runner, dataloader, max_iters, val_begin, val_interval,
                         dynamic_intervals)
        if not isinstance(self.dataloader.batch_sampler, FastForwardBatchSampler):
            raise TypeError('FastResumeIterBasedTrainLoop builds its own dataloader: give it '
                            'the dataloader config, not a built DataLoader')

    def _start_stream(self) -> None:
        """Start the dataloader at batch ``self._iter`` (skipped by index when resuming)."""
        if self._iter > 0:
            print_log(f'Skipping the {self._iter} trained batches by their indices (no data '
                      'loaded)', logger='current', level=logging.INFO)
        self.dataloader_iterator = fast_forward(self.dataloader, self._iter)

    def run(self):
        """Launch training (mmengine's loop, with the skip by index)."""
        self._start_stream()
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_iter(self, data_batch) -> None:
        """mmengine's iteration; a step skipped for non-finite losses gives no outputs."""
        self.runner.call_hook('before_train_iter', batch_idx=self._iter, data_batch=data_batch)
        outputs = train_step_or_skip(self.runner, data_batch)
        self.runner.call_hook('after_train_iter', batch_idx=self._iter, data_batch=data_batch,
                              outputs=outputs)
        self._iter += 1


def train_step_or_skip(runner, data_batch) -> dict:
    """The model's train step; a step skipped for non-finite losses
    (:class:`~mmdistill.nonfinite.SkippedStep`) gives no outputs and no optimizer step."""
    try:
        return runner.model.train_step(data_batch, optim_wrapper=runner.optim_wrapper)
    except SkippedStep:
        return {}


@LOOPS.register_module()
class DistillEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop``; a step skipped for non-finite losses
    (``non_finite=dict(action='skip')``) is counted and the epoch goes on."""

    def run_iter(self, idx, data_batch) -> None:
        self.runner.call_hook('before_train_iter', batch_idx=idx, data_batch=data_batch)
        outputs = train_step_or_skip(self.runner, data_batch)
        self.runner.call_hook('after_train_iter', batch_idx=idx, data_batch=data_batch,
                              outputs=outputs)
        self._iter += 1


def fast_forward(dataloader, n: int) -> _InfiniteDataloaderIterator:
    """mmengine's infinite iterator over ``dataloader``, positioned after its first ``n`` batches.

    ``dataloader`` has a :class:`FastForwardBatchSampler` (see :func:`fast_forward_config`). Only
    the wrapped batch sampler runs for the ``n`` batches; at each epoch end the sampler is given
    the next epoch, as mmengine's iterator does (without its 2 s pause).
    """
    wrapper: FastForwardBatchSampler = dataloader.batch_sampler
    epoch, advanced = 0, None
    if n > 0:
        advanced = iter(wrapper.batch_sampler)
        left = n
        while left:
            try:
                next(advanced)
                left -= 1
            except StopIteration:
                epoch += 1
                set_epoch(dataloader, epoch)
                advanced = iter(wrapper.batch_sampler)
    wrapper.start(advanced)
    iterator = _InfiniteDataloaderIterator(dataloader)
    iterator._epoch = epoch
    return iterator


def fast_forward_config(dataloader: dict) -> dict:
    """The dataloader config with its batch sampler wrapped in :class:`FastForwardBatchSampler`."""
    cfg = dict(dataloader)
    inner = cfg.pop('batch_sampler', None)
    wrapper = dict(type=FastForwardBatchSampler, batch_sampler=inner)
    if inner is None:
        wrapper['drop_last'] = cfg.pop('drop_last', False)
    cfg['batch_sampler'] = wrapper
    return cfg


__all__ = ['DistillEpochBasedTrainLoop', 'FastForwardBatchSampler',
           'FastResumeIterBasedTrainLoop', 'fast_forward', 'fast_forward_config', 'set_epoch',
           'train_step_or_skip']

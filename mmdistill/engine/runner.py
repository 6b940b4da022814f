"""The Runner of distillation configs: mmengine's, with exact, fast resume and CPU launch."""
from __future__ import annotations

import logging
import os.path as osp

from mmengine.config import Config
from mmengine.dist import master_only
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS, MODELS, RUNNERS
from mmengine.runner import Runner

from .checkpoint import AtomicCheckpointHook, atomic_path, is_local_path


def distiller_class(cfg: Config) -> type | None:
    """The :class:`~mmdistill.distiller.BaseDistiller` subclass that ``cfg.model`` names (looked
    up in the registry of the config's ``default_scope``), or None for any other model."""
    from ..distiller import BaseDistiller
    model_type = cfg.get('model', {}).get('type')
    if isinstance(model_type, str):
        with MODELS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
            model_type = registry.get(model_type)
    if isinstance(model_type, type) and issubclass(model_type, BaseDistiller):
        return model_type
    return None


@RUNNERS.register_module()
class DistillRunner(Runner):
    """mmengine's Runner, with what a distillation run needs; ``runner_type = 'DistillRunner'``.

    mmdet's, mmseg's and mmpretrain's own ``tools/train.py`` build the runner a config's
    ``runner_type`` names, so a config with this line gets, under their tools as under ours:

    * :func:`prepare_config`: :class:`~mmdistill.hooks.DistillStateHook` (RNG states and the
      teacher's identity in checkpoints) and the dataset size of losses sized from it (CRD);
    * :func:`~mmdistill.engine.launch.setup_distributed`: gloo and ``device_ids=None`` on
      machines without CUDA;
    * :class:`~mmdistill.engine.loops.FastResumeIterBasedTrainLoop` in place of mmengine's
      ``IterBasedTrainLoop``: a resumed run skips the trained batches by index;
    * checkpoints that a crash at any moment cannot corrupt: every local checkpoint is written
      to a temporary file, synced and renamed (:meth:`save_checkpoint`), and
      :class:`~mmdistill.engine.checkpoint.AtomicCheckpointHook` replaces ``CheckpointHook``
      (``last_checkpoint`` replaced atomically, old checkpoints deleted only after the new one).

    Our ``tools/train.py`` and ``tools/test.py`` leave all of it to :meth:`from_cfg`, which
    prepares the config once.

    Checkpoints of mmengine load under torch's weights-only default once ``mmdistill`` is
    imported (:func:`~mmdistill.engine.checkpoint.allow_mmengine_checkpoints`), with this
    runner or mmengine's.
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> 'DistillRunner':
        from .launch import setup_distributed
        prepare_config(cfg)
        setup_distributed(cfg)
        return super().from_cfg(cfg)

    def build_train_loop(self, loop):
        from mmengine.registry import LOOPS
        from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

        from .loops import DistillEpochBasedTrainLoop, FastResumeIterBasedTrainLoop
        if isinstance(loop, dict):
            loop = dict(loop)
            loop_type = loop.get('type')
            if isinstance(loop_type, str):
                with LOOPS.switch_scope_and_registry(self.cfg.get('default_scope')) as reg:
                    loop_type = reg.get(loop_type)
            by_epoch = loop.get('by_epoch')
            if loop_type is IterBasedTrainLoop or (loop_type is None and by_epoch is False):
                loop.pop('by_epoch', None)
                loop['type'] = FastResumeIterBasedTrainLoop
            elif loop_type is EpochBasedTrainLoop or (loop_type is None and by_epoch is True):
                loop.pop('by_epoch', None)
                loop['type'] = DistillEpochBasedTrainLoop
        return super().build_train_loop(loop)

    def register_hook(self, hook: Hook | dict, priority=None) -> None:
        """Register ``hook``; a ``CheckpointHook`` config becomes an
        :class:`~mmdistill.engine.checkpoint.AtomicCheckpointHook` with the same arguments."""
        if isinstance(hook, dict):
            hook_type = hook.get('type')
            if isinstance(hook_type, str):
                with HOOKS.switch_scope_and_registry(self.cfg.get('default_scope')) as reg:
                    hook_type = reg.get(hook_type)
            if hook_type is CheckpointHook:
                hook = dict(hook, type=AtomicCheckpointHook)
        super().register_hook(hook, priority)

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, file_client_args: dict | None = None,
                        save_optimizer: bool = True, save_param_scheduler: bool = True,
                        meta: dict | None = None, by_epoch: bool = True,
                        backend_args: dict | None = None) -> None:
        """mmengine's ``Runner.save_checkpoint``, atomic on the local file system: the checkpoint
        is written to ``<filename>.tmp`` beside it, synced and renamed onto ``filename``
        (:func:`~mmdistill.engine.checkpoint.atomic_path`), so a crash mid-write leaves the
        previous file, never a truncated one. Remote backends are written as mmengine does."""
        filepath = osp.join(out_dir, filename)
        atomic = file_client_args is None and is_local_path(filepath, backend_args)
        save = super().save_checkpoint
        args = dict(save_optimizer=save_optimizer, save_param_scheduler=save_param_scheduler,
                    meta=meta, by_epoch=by_epoch, backend_args=backend_args)
        if not atomic:
            return save(out_dir, filename, file_client_args, **args)
        with atomic_path(filepath) as tmp:
            save(out_dir, osp.basename(tmp), **args)


def use_amp(cfg: Config) -> Config:
    """Mixed-precision training for ``--amp`` where the device runs it natively
    (:func:`~mmdistill.engine.precision.amp_optim_wrapper`): mmengine's ``AmpOptimWrapper``
    (fp16, dynamic loss scale) where CUDA is; on a CPU with native bf16
    :class:`~mmdistill.engine.optim.BF16OptimWrapper` with a distillation config's student in
    channels-last; on a CPU that emulates bf16 the fp32 ``OptimWrapper`` stays (logged). A
    distillation config's teacher gets ``teacher_autocast='auto'`` unless the config sets it
    (None included)."""
    import torch

    from .precision import amp_optim_wrapper
    if distiller_class(cfg) is not None and 'teacher_autocast' not in cfg.model:
        cfg.model.teacher_autocast = 'auto'
    wrapper = cfg.optim_wrapper
    if wrapper.get('type', 'OptimWrapper') in ('AmpOptimWrapper', 'BF16OptimWrapper'):
        return cfg
    device_type = 'cuda' if torch.cuda.is_available() else 'cpu'
    wrapper_type, reason = amp_optim_wrapper(device_type)
    if wrapper_type is None:
        print_log(f'--amp: the student trains in fp32 ({reason})', logger='current',
                  level=logging.WARNING)
        return cfg
    print_log(f'--amp: the student trains under {wrapper_type} ({reason})', logger='current')
    wrapper.type = wrapper_type
    if wrapper_type == 'AmpOptimWrapper':
        wrapper.loss_scale = 'dynamic'
    elif distiller_class(cfg) is not None:
        cfg.model.student_channels_last = True
    return cfg


def prepare_config(cfg: Config) -> Config:
    """Complete a distillation config for training; :meth:`DistillRunner.from_cfg` calls it.

    A training run gets the :class:`~mmdistill.hooks.DistillStateHook` (exact resume) and the
    dataset size for losses whose memory is sized from it (CRD's ``n_data``) when the config
    leaves it out. A test run (``model.skip_teacher``, as ``tools/test.py`` sets) builds the
    student only and gets nothing; nor does a config of any other model. Idempotent.
    """
    if distiller_class(cfg) is None or cfg.model.get('skip_teacher', False):
        return cfg
    hooks = list(cfg.get('custom_hooks', []))
    if not any(h.get('type') == 'DistillStateHook' for h in hooks):
        hooks.append(dict(type='DistillStateHook'))
    cfg.custom_hooks = hooks
    _fill_dataset_sizes(cfg)
    return cfg


def _fill_dataset_sizes(cfg: Config) -> None:
    from mmengine.registry import DATASETS, init_default_scope

    from ..losses.base import contract
    from ..registry import DISTILL_LOSSES
    entries = []
    for entry in cfg.model.get('distill_losses', {}).values():
        loss_cls = DISTILL_LOSSES.get(entry.get('type'))
        arg = contract(loss_cls).dataset_size_arg if loss_cls is not None else None
        if arg and entry.get(arg) is None:
            entries.append((entry, arg))
    if entries:
        init_default_scope(cfg.get('default_scope', 'mmengine'))
        n = len(DATASETS.build(cfg.train_dataloader.dataset))
        for entry, arg in entries:
            entry[arg] = n


__all__ = ['DistillRunner', 'distiller_class', 'prepare_config', 'use_amp']

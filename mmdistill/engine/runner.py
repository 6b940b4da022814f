"""The Runner the tools use: mmengine's, with resume working under torch >= 2.6 defaults."""
from __future__ import annotations

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, RUNNERS
from mmengine.runner import Runner


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


def run_checkpoint_globals() -> list:
    """The non-tensor types mmengine writes into its own training checkpoints."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
        from numpy._core.multiarray import _reconstruct, scalar
    else:
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in ('float64', 'float32', 'float16', 'int64', 'int32',
                                          'uint8', 'bool')]
    return [HistoryBuffer, getattr, np.ndarray, np.dtype, _reconstruct, scalar, *dtypes]


@RUNNERS.register_module()
class DistillRunner(Runner):
    """mmengine's Runner; resuming and testing accept the types of mmengine's own checkpoints.

    torch >= 2.6 loads checkpoints as weights only. Training checkpoints written by mmengine hold
    its ``HistoryBuffer`` and numpy arrays, so ``resume`` and ``load_checkpoint`` (the checkpoint
    given to ``tools/test.py``) allow exactly those types, by allow-list, never by turning
    ``weights_only`` off. Teacher checkpoints are loaded elsewhere, as plain weights.
    """

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True, map_location='default') -> None:
        with torch.serialization.safe_globals(run_checkpoint_globals()):
            super().resume(filename, resume_optimizer, resume_param_scheduler, map_location)

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys=[(r'^module.', '')]):
        with torch.serialization.safe_globals(run_checkpoint_globals()):
            return super().load_checkpoint(filename, map_location, strict, revise_keys)


def prepare_config(cfg: Config, for_test: bool = False) -> Config:
    """Adjust a config for our tools.

    Test runs build the student only. Training runs of a distillation config get the
    :class:`~mmdistill.hooks.DistillStateHook` (exact resume) and the dataset size for losses
    whose memory is sized from it (CRD's ``n_data``) when the config leaves it out.
    """
    model = cfg.get('model', {})
    if distiller_class(cfg) is None:
        return cfg
    if for_test:
        model['skip_teacher'] = True
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


__all__ = ['DistillRunner', 'distiller_class', 'prepare_config']

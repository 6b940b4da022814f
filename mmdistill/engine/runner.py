"""The Runner the tools use: mmengine's, with resume working under torch >= 2.6 defaults."""
from __future__ import annotations

import torch
from mmengine.config import Config
from mmengine.runner import Runner

DISTILL_TYPES = ('DistillDetector', 'DistillSegmentor', 'DistillClassifier')


def _resume_safe_globals() -> list:
    """The non-tensor types mmengine writes into its own training checkpoints."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    types = [HistoryBuffer, getattr, np.ndarray, np.dtype]
    core = getattr(np, '_core', None) or np.core
    types.append(core.multiarray._reconstruct)
    types.append(core.multiarray.scalar)
    types += [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    return types


class DistillRunner(Runner):
    """mmengine's Runner; ``resume`` accepts the extra types of the run's own checkpoints.

    torch >= 2.6 loads checkpoints as weights only. Training checkpoints written by this run hold
    mmengine's ``HistoryBuffer`` and numpy arrays, so resuming allows exactly those types. Other
    loads (teacher checkpoints, ``load_from``) stay weights only.
    """

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True, map_location='default') -> None:
        with torch.serialization.safe_globals(_resume_safe_globals()):
            super().resume(filename, resume_optimizer, resume_param_scheduler, map_location)


def prepare_config(cfg: Config, for_test: bool = False) -> Config:
    """Adjust a config for our tools: test runs build the student only."""
    model = cfg.get('model', {})
    if for_test and model.get('type') in DISTILL_TYPES:
        model['skip_teacher'] = True
    return cfg


def is_distill_config(cfg: Config) -> bool:
    return cfg.get('model', {}).get('type') in DISTILL_TYPES


__all__ = ['DistillRunner', 'prepare_config', 'is_distill_config']

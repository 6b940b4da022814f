"""Runner-side helpers used by the tools."""
from .loops import FastResumeIterBasedTrainLoop
from .optim import BF16OptimWrapper
from .runner import DistillRunner, distiller_class, prepare_config, use_amp

__all__ = ['BF16OptimWrapper', 'DistillRunner', 'FastResumeIterBasedTrainLoop',
           'distiller_class', 'prepare_config', 'use_amp']

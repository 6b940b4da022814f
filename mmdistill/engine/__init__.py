"""Runner-side helpers used by the tools."""
from .loops import FastResumeIterBasedTrainLoop
from .runner import DistillRunner, distiller_class, prepare_config

__all__ = ['DistillRunner', 'FastResumeIterBasedTrainLoop', 'distiller_class', 'prepare_config']

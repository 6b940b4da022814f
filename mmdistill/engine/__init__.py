"""Runner-side helpers used by the tools."""
from .runner import DistillRunner, distiller_class, prepare_config

__all__ = ['DistillRunner', 'distiller_class', 'prepare_config']

"""Runner-side helpers used by the tools."""
from .runner import DistillRunner, prepare_config

__all__ = ['DistillRunner', 'prepare_config']

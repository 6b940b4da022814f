"""mmdistill: knowledge distillation for the OpenMMLab 2.x stack.

Importing it registers the distillation losses (``DISTILL_LOSSES``) and the wrappers of the
installed libraries (``DistillDetector`` in mmdet's MODELS, ...). Configs add
``custom_imports = dict(imports=['mmdistill'])``.
"""
__version__ = '0.1.0'

from . import datasets, hooks, losses  # noqa: E402,F401
from .models import *  # noqa: E402,F401,F403
from .registry import DISTILL_LOSSES  # noqa: E402

__all__ = ['DISTILL_LOSSES', '__version__']

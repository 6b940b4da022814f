"""mmdistill: knowledge distillation for the OpenMMLab 2.x stack.

Importing it registers the distillation losses (``DISTILL_LOSSES``) and the wrappers of the
installed libraries (``DistillDetector`` in mmdet's MODELS, ...). Configs add
``custom_imports = dict(imports=['mmdistill'])``. It also lets torch's weights-only loading read
mmengine's training checkpoints (an allow-list of the types mmengine writes) and registers
``DistillRunner`` (``runner_type = 'DistillRunner'``: exact, fast resume under any library's tools).
"""
__version__ = '0.1.0'

from .engine.checkpoint import allow_mmengine_checkpoints  # noqa: E402

allow_mmengine_checkpoints()

from . import datasets, engine, hooks, losses  # noqa: E402,F401
from .models import *  # noqa: E402,F401,F403
from .registry import DISTILL_LOSSES  # noqa: E402

__all__ = ['DISTILL_LOSSES', '__version__']

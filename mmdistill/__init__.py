"""mmdistill: knowledge distillation for the OpenMMLab 2.x stack.

Importing it registers the distillation losses (``DISTILL_LOSSES``) and the wrappers of the
installed libraries (``DistillDetector`` in mmdet's MODELS, ...). Configs add
``custom_imports = dict(imports=['mmdistill'])``. It also lets torch's weights-only loading read
mmengine's training checkpoints (an allow-list of the types mmengine writes) and registers
``DistillRunner`` (``runner_type = 'DistillRunner'``: exact, fast resume under any library's tools).

It checks the installed mmengine, torch, numpy and mmcv against the supported ranges
(``mmdistill/version.py``) and makes ``mmdistill::<method>/<config>.py`` a config path that
mmengine resolves (to the configs shipped in ``mmdistill/.mim/configs``).
"""
from .utils.version_check import check_installed_versions
from .version import __version__

check_installed_versions()

from mmengine.config.utils import MODULE2PACKAGE  # noqa: E402

MODULE2PACKAGE.setdefault('mmdistill', 'mmdistill')

from .engine.checkpoint import allow_mmengine_checkpoints  # noqa: E402

allow_mmengine_checkpoints()

from . import datasets, engine, hooks, losses  # noqa: E402,F401
from .models import *  # noqa: E402,F401,F403
from .registry import DISTILL_LOSSES  # noqa: E402

__all__ = ['DISTILL_LOSSES', '__version__']

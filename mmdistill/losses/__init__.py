"""Distillation losses, one method per file; importing this registers them in DISTILL_LOSSES.

The contract every loss declares is :class:`~mmdistill.losses.base.DistillLoss`.
"""
from .at import ATLoss
from .base import DistillLoss
from .ccd import CCDLoss
from .cosine import CosineLoss
from .crd import CRDLoss
from .crosskd import CrossKDLoss
from .ctkd import CTKDLoss
from .cwd import CWDLoss
from .dkd import DKDLoss
from .fgd import FGDLoss
from .fitnet import FitNetLoss
from .infonce import InfoNCELoss
from .kd import KDLoss
from .ld import LDLoss
from .mgd import MGDLoss
from .ofa import OFALoss
from .pkd import PKDLoss
from .sdd import SDDLoss

__all__ = ['ATLoss', 'CCDLoss', 'CosineLoss', 'CRDLoss', 'CrossKDLoss', 'CTKDLoss', 'CWDLoss',
           'DKDLoss', 'DistillLoss', 'FGDLoss', 'FitNetLoss', 'InfoNCELoss', 'KDLoss', 'LDLoss',
           'MGDLoss', 'OFALoss', 'PKDLoss', 'SDDLoss']

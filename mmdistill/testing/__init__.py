"""Official-form references of the losses, for the tests and ``benchmark_losses.py``.

Each is written the way the method's released code computes the loss (its loops, its layer
names), independently of ``mmdistill.losses``; a module reference loads the state dict of the
corresponding loss, so both compute the same function on the same parameters. Like
``mmdet.testing``, nothing in the package imports it.
"""
from .at import reference_at
from .cwd import reference_cwd
from .fgd import RefFGD
from .fitnet import RefConvReg, reference_fitnet
from .mgd import RefMGD

__all__ = ['RefConvReg', 'RefFGD', 'RefMGD', 'reference_at', 'reference_cwd',
           'reference_fitnet']

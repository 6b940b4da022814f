"""mmengine's training checkpoints under torch's weights-only loading (torch >= 2.6)."""
from __future__ import annotations

import numpy as np
import torch


def mmengine_checkpoint_globals() -> list:
    """The non-tensor types mmengine 0.10 writes into its training checkpoints.

    The message hub's ``HistoryBuffer`` (with numpy arrays and scalars, and its statistics
    methods pickled as ``getattr(HistoryBuffer, name)``) and numpy's dtypes. Allowing
    ``getattr`` lets the unpickler look up attributes of objects it has already built from
    allowed types; calling what it finds still needs that callable to be allowed.
    """
    from mmengine.logging import HistoryBuffer
    if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
        from numpy._core.multiarray import _reconstruct, scalar
    else:
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in ('float64', 'float32', 'float16', 'int64', 'int32',
                                          'uint8', 'bool')]
    return [HistoryBuffer, getattr, np.ndarray, np.dtype, _reconstruct, scalar, *dtypes]


def allow_mmengine_checkpoints() -> None:
    """Allow exactly :func:`mmengine_checkpoint_globals` in ``torch.load(weights_only=True)``.

    Called by ``import mmdistill`` (so by ``custom_imports``): mmengine's own Runner, under
    mmdet's, mmseg's or mmpretrain's tools, then resumes from and tests its checkpoints.
    ``weights_only`` stays on: a file with any other type is still refused.
    """
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


__all__ = ['allow_mmengine_checkpoints', 'mmengine_checkpoint_globals']

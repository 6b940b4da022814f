"""Datasets: the synthetic COCO-format shapes set of the demo, CamVid for mmseg."""
from .synthetic import SHAPE_CLASSES, make_shapes_coco

__all__ = ['SHAPE_CLASSES', 'make_shapes_coco']
try:
    from .camvid import CamVidDataset  # noqa: F401
    __all__.append('CamVidDataset')
except ImportError:  # mmseg missing: the wrapper registry says what to install
    pass

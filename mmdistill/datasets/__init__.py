"""Datasets: the synthetic COCO-format shapes set of the demo, CamVid for mmseg."""
import importlib.util

from .synthetic import SHAPE_CLASSES, make_shapes_coco

__all__ = ['SHAPE_CLASSES', 'make_shapes_coco']
if importlib.util.find_spec('mmseg') is not None:
    from .camvid import CamVidDataset  # noqa: F401
    __all__.append('CamVidDataset')

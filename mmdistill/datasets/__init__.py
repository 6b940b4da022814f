"""Dataset helpers: the synthetic COCO-format shapes set of the demo."""
from .synthetic import SHAPE_CLASSES, make_shapes_coco

__all__ = ['SHAPE_CLASSES', 'make_shapes_coco']

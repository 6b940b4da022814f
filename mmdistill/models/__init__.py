"""Task wrappers, each registered in its own library's MODELS when that library is installed."""
import importlib
import importlib.util

__all__ = []
for _module, _name, _lib in (('detector', 'DistillDetector', 'mmdet'),
                             ('segmentor', 'DistillSegmentor', 'mmseg'),
                             ('classifier', 'DistillClassifier', 'mmpretrain')):
    if importlib.util.find_spec(_lib) is None:
        continue
    try:
        _mod = importlib.import_module(f'.{_module}', __name__)
    except ModuleNotFoundError as _err:  # wrapper not written yet
        if _err.name != f'{__name__}.{_module}':
            raise
        continue
    globals()[_name] = getattr(_mod, _name)
    __all__.append(_name)

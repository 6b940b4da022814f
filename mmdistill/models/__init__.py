"""Task wrappers: each module is imported (and its wrapper registered in its library's MODELS)
when that library is installed; the wrappers are the ``BaseDistiller`` subclasses it defines."""
import importlib
import importlib.util

from ..distiller import BaseDistiller

__all__ = []
for _lib, _module in (('mmdet', 'detector'), ('mmseg', 'segmentor'),
                      ('mmpretrain', 'classifier')):
    if importlib.util.find_spec(_lib) is None:
        continue
    _mod = importlib.import_module(f'.{_module}', __name__)
    for _name, _obj in vars(_mod).items():
        if isinstance(_obj, type) and issubclass(_obj, BaseDistiller) and \
                _obj.__module__ == _mod.__name__:
            globals()[_name] = _obj
            __all__.append(_name)

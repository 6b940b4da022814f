"""Task wrappers: each module is imported (and its wrapper registered in its library's MODELS)
when that library imports; the wrappers are the ``BaseDistiller`` subclasses it defines.

Where a library is missing, fails to import or is out of the supported range
(``mmdistill/version.py``), ``import mmdistill`` still works: the wrapper's
name is registered in mmengine's root ``MODELS`` as a builder that raises an ``ImportError``
saying what to install, and ``from mmdistill.models import DistillDetector`` raises the same.
"""
import importlib

from mmengine.registry import MODELS

from ..distiller import BaseDistiller
from ..utils.version_check import check_library_version
from ..version import OPTIONAL

# library -> (module here, wrapper, pip extra)
WRAPPERS = {'mmdet': ('detector', 'DistillDetector', 'det'),
            'mmseg': ('segmentor', 'DistillSegmentor', 'seg'),
            'mmpretrain': ('classifier', 'DistillClassifier', 'cls')}
MISSING: dict[str, str] = {}  # wrapper name -> why it is not available

__all__ = []
for _lib, (_module, _wrapper, _extra) in WRAPPERS.items():
    _distribution = next(d for d, (name, *_) in OPTIONAL.items() if name == _lib)
    try:
        check_library_version(_distribution)
        _mod = importlib.import_module(f'.{_module}', __name__)
    except ImportError as error:
        MISSING[_wrapper] = (f'{_wrapper} needs {_lib}, which did not import ({error}); install '
                             f'it with: pip install "mmdistill[{_extra}]" (mmcv: '
                             'tools/install_deps.sh)')

        def _unavailable(*args, _why=MISSING[_wrapper], **kwargs):
            raise ImportError(_why)

        MODELS.register_module(name=_wrapper, module=_unavailable, force=True)
        continue
    for _name, _obj in vars(_mod).items():
        if isinstance(_obj, type) and issubclass(_obj, BaseDistiller) and \
                _obj.__module__ == _mod.__name__:
            globals()[_name] = _obj
            __all__.append(_name)


def __getattr__(name: str):
    if name in MISSING:
        raise ImportError(MISSING[name])
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

"""The version of mmdistill and the library versions it supports: the one source of both.

``setup.py`` reads this file without importing the package (``install_requires`` and extras are
built from ``REQUIRED`` and ``OPTIONAL``); ``mmdistill.utils.version_check`` checks the installed
versions against the same ranges at import time. The exact versions CI tests are in
``requirements/ci-constraints.txt``.
"""
__version__ = '0.1.0'

# distribution -> supported versions (PEP 440). Why each range: README, "Supported versions".
REQUIRED = {
    'mmengine': '>=0.10.0,<0.11.0',
    'torch': '>=2.4,<3',
    'numpy': '<2',
}
# Checked at import when installed, never installed by pip (no wheel for current torch: its ops
# are built from the sdist, tools/install_deps.sh).
MMCV = {'mmcv': '>=2.0.0,<2.2.0'}
# distribution -> (import name, pip extra, supported versions): checked when the wrapper of the
# library is imported (mmdistill.models)
OPTIONAL = {
    'mmdet': ('mmdet', 'det', '>=3.3.0,<3.4.0'),
    'mmsegmentation': ('mmseg', 'seg', '>=1.2.0,<1.3.0'),
    'mmpretrain': ('mmpretrain', 'cls', '>=1.2.0,<1.3.0'),
}

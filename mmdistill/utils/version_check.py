"""The installed OpenMMLab stack against the ranges mmdistill supports (``mmdistill/version.py``).

``import mmdistill`` checks mmengine, torch and numpy (installed with it) and mmcv (when
installed); each wrapper module checks its library (mmdet, mmsegmentation, mmpretrain) when it
imports. A version out of range raises an ``ImportError`` that names the library, the installed
version and the supported range. ``MMDISTILL_SKIP_VERSION_CHECK=1`` turns the checks into warnings
(for trying an untested version).
"""
from __future__ import annotations

import os
import warnings
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ..version import MMCV, OPTIONAL, REQUIRED, __version__

SKIP_ENV = 'MMDISTILL_SKIP_VERSION_CHECK'


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def version_error(distribution: str, installed: str, supported: str) -> str | None:
    """Why ``installed`` is not supported (None when it is in ``supported``). Pre-releases and
    local versions (``2.0.0rc4``, ``2.14.1+cu130``) count by their release number."""
    release = Version(installed)
    if SpecifierSet(supported).contains(Version(release.base_version), prereleases=True) \
            or SpecifierSet(supported).contains(release, prereleases=True):
        return None
    return (f'mmdistill {__version__} supports {distribution}{supported}, but {distribution} '
            f'{installed} is installed. Install a supported version, e.g. '
            f'pip install "{distribution}{supported}" (the versions CI tests: '
            f'requirements/ci-constraints.txt), or set {SKIP_ENV}=1 to try this one.')


def _raise_or_warn(message: str) -> None:
    if os.environ.get(SKIP_ENV, '') not in ('', '0'):
        warnings.warn(message, stacklevel=3)
        return
    raise ImportError(message)


def check_installed_versions() -> None:
    """mmengine, torch, numpy (required) and mmcv (if installed) in their supported ranges."""
    for distribution, supported in {**REQUIRED, **MMCV}.items():
        installed = installed_version(distribution)
        if installed is None:
            if distribution in REQUIRED:
                _raise_or_warn(f'mmdistill {__version__} needs {distribution}{supported}, which '
                               'is not installed')
            continue
        error = version_error(distribution, installed, supported)
        if error:
            _raise_or_warn(error)


def check_library_version(distribution: str) -> None:
    """The optional library ``distribution`` (a key of ``OPTIONAL``: mmdet, mmsegmentation,
    mmpretrain) in its supported range; nothing when it is not installed (its import fails on
    its own)."""
    installed = installed_version(distribution)
    if installed is None:
        return
    error = version_error(distribution, installed, OPTIONAL[distribution][2])
    if error:
        _raise_or_warn(error)

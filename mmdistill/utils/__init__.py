"""Small utilities of the package (version checks)."""
from .version_check import check_installed_versions, check_library_version

__all__ = ['check_installed_versions', 'check_library_version']

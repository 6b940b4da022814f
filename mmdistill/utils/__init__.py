"""Small utilities of the package (version checks, config keys)."""
from .keys import check_known_keys
from .version_check import check_installed_versions, check_library_version

__all__ = ['check_installed_versions', 'check_known_keys', 'check_library_version']

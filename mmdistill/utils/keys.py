"""The check every config dict of the package makes of its keys."""
from __future__ import annotations

from collections.abc import Iterable, Mapping


def check_known_keys(cfg: Mapping, known: Iterable[str], key: str) -> None:
    """Raise ``ValueError('<key>: unknown keys [...]; known: [...]')`` when ``cfg`` has a key
    outside ``known``; ``key`` is the config path of ``cfg``."""
    known = list(known)
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise ValueError(f'{key}: unknown keys {unknown}; known: {known}')

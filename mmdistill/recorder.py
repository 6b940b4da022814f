"""Forward-hook recorder of named module outputs ("taps").

A tap names a module by its path in the model and optionally an index:

* ``'backbone.layer4'``: the module's output.
* ``'neck[0]'``: element 0 of the module's tuple/list output (the module runs once a step).
* ``'bbox_head.retina_cls[2]'``: the third call of a module that runs several times a step
  (a head shared over FPN levels).

The index is a call index when the module ran more than once in the step, an element index
otherwise, so a submodule called ``0`` (``'layers.0'``) is never confused with an index.

A tapped output that the model changes in place after the module returns it (a norm layer
followed by ``ReLU(inplace=True)``, a block output followed by ``+=``) would hold the changed
values; the recorder notices it (tensor version counters) and :func:`run_recorded` switches such
taps to recording a copy, so they hold what the module returned.
"""
from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

_TAP_RE = re.compile(r'^(?P<path>[A-Za-z_]\w*(?:\.\w+)*)(?:\[(?P<index>-?\d+)\])?$')


@dataclass(frozen=True)
class Tap:
    """A parsed tap: module ``path`` and optional output/call ``index``."""

    path: str
    index: int | None = None

    @classmethod
    def parse(cls, spec: str, key: str = 'tap') -> 'Tap':
        """Parse ``'a.b[i]'``; ``key`` names the config key in error messages."""
        if not isinstance(spec, str):
            raise TypeError(f'{key}: a tap is a string like "neck[0]", got {spec!r}')
        match = _TAP_RE.match(spec.strip())
        if match is None:
            raise ValueError(f'{key}: cannot parse tap {spec!r}; expected a module path with an '
                             'optional index, e.g. "backbone.layer4", "neck[0]", '
                             '"bbox_head.retina_cls[2]"')
        index = match.group('index')
        return cls(match.group('path'), None if index is None else int(index))

    def __str__(self) -> str:
        return self.path if self.index is None else f'{self.path}[{self.index}]'


def find_module(model: nn.Module, path: str, key: str, owner: str) -> nn.Module:
    """Return ``model``'s submodule at ``path``; on failure name ``key`` and list candidates."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        pass
    names = [name for name, _ in model.named_modules() if name]
    parts = path.split('.')
    prefix = ''
    for i in range(len(parts), 0, -1):  # deepest existing ancestor
        candidate = '.'.join(parts[:i - 1])
        if candidate == '' or candidate in names:
            prefix = candidate
            break
    children = [n for n in names if n.startswith(prefix + '.' if prefix else '')
                and n.count('.') == (prefix.count('.') + 1 if prefix else 0)]
    close = difflib.get_close_matches(path, names, n=8, cutoff=0.5)
    raise ValueError(
        f'{key}: {path!r} names no module of the {owner}. '
        f'Modules under {prefix or "the model root"!r}: {children[:20]}; '
        f'closest names: {close}')


class FeatureRecorder:
    """Record the outputs of the tapped modules of one model, step by step.

    Hooks are registered once; they store outputs only inside :meth:`recording`, and the store
    is cleared when that context is entered and left, so nothing survives a step.

    Args:
        model: the model whose submodules are tapped.
        taps: the taps to record.
        owner: 'student' or 'teacher', for error messages.
    """

    def __init__(self, model: nn.Module, taps: Iterable[tuple[Tap, str]], owner: str) -> None:
        self.owner = owner
        self._outputs: dict[str, list[Any]] = {}
        self._versions: dict[str, list[list[int | None]]] = {}
        #: paths whose outputs are recorded as copies (the model changes them in place)
        self.copied: set[str] = set()
        self._keep: dict[str, tuple[str, set[int]]] = {}
        self._active = False
        self._handles = []
        self.paths: list[str] = []
        for tap, key in taps:
            module = find_module(model, tap.path, key, owner)
            if tap.path not in self.paths:
                self.paths.append(tap.path)
                self._handles.append(module.register_forward_hook(self._hook(tap.path)))

    def _hook(self, path: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self._active:
                return
            calls = self._outputs.setdefault(path, [])
            kind, needed = self._keep.get(path, ('all', set()))
            if kind == 'calls' and len(calls) not in needed:
                output = None  # a call no tap reads: count it, do not hold it
            elif kind == 'elements':
                output = _Subset(output, needed)
            if path in self.copied:
                output = _copy(output)
            calls.append(output)
            self._versions.setdefault(path, []).append([_version(t) for t in _tensors(output)])
        return hook

    def mutated(self) -> list[str]:
        """Paths whose recorded tensors have been changed in place since they were recorded."""
        return [path for path, calls in self._outputs.items() if self._is_mutated(path, calls)]

    def _is_mutated(self, path: str, calls: list) -> bool:
        return any(_version(t) != v for call, versions in zip(calls, self._versions[path])
                   for t, v in zip(_tensors(call), versions))

    def copy_mutated(self) -> list[str]:
        """Record copies from now on for the paths :meth:`mutated` gives; return those paths."""
        paths = [p for p in self.mutated() if p not in self.copied]
        self.copied.update(paths)
        return paths

    def clear(self) -> None:
        """Forget this step's records."""
        self._outputs.clear()
        self._versions.clear()

    def keep_only(self, taps: Iterable[Tap]) -> None:
        """Hold only what ``taps`` read from now on (call after a step has been recorded).

        A tap without an index keeps a module's whole output; otherwise only the indexed calls
        (a module run several times) or elements (a module run once) are held, so a teacher
        tapped at ``'neck[0]'`` does not keep its other FPN levels alive.
        """
        by_path: dict[str, list[Tap]] = {}
        for tap in taps:
            by_path.setdefault(tap.path, []).append(tap)
        for path, path_taps in by_path.items():
            calls = self._outputs.get(path)
            if not calls or any(t.index is None for t in path_taps):
                continue
            if len(calls) > 1:
                self._keep[path] = ('calls', {t.index % len(calls) for t in path_taps})
            elif isinstance(calls[0], (tuple, list)):
                self._keep[path] = ('elements', {t.index % len(calls[0]) for t in path_taps})

    @contextmanager
    def recording(self) -> Iterator['FeatureRecorder']:
        """Record during the block; the store is empty before and after it."""
        self.clear()
        self._active = True
        try:
            yield self
        finally:
            self._active = False
            self.clear()

    @contextmanager
    def paused(self) -> Iterator['FeatureRecorder']:
        """Record nothing during the block (a loss running the model's modules itself)."""
        active, self._active = self._active, False
        try:
            yield self
        finally:
            self._active = active

    def get(self, tap: Tap, key: str) -> list[torch.Tensor]:
        """Resolve ``tap`` in this step's records into a list of tensors (one per level).

        A tap whose value is a tuple/list of tensors (e.g. ``'neck'``, all FPN levels) gives one
        entry per element; a single tensor gives a one-element list.
        """
        calls = self._outputs.get(tap.path)
        if not calls:
            raise RuntimeError(
                f'{key}: the {self.owner} module {tap.path!r} did not run in this step')
        if self._is_mutated(tap.path, calls):
            raise RuntimeError(
                f'{key}: the {self.owner} changed the output of {tap.path!r} in place after it '
                'was recorded (e.g. an in-place activation after a norm layer); record a copy '
                'with copy_mutated() (the wrappers do so at build time) or tap another module')
        if len(calls) > 1:
            if tap.index is None:
                value: Any = list(calls)
            elif -len(calls) <= tap.index < len(calls):
                value = calls[tap.index]
            else:
                raise IndexError(
                    f'{key}: {tap} asks for call {tap.index} of {tap.path!r}, which ran '
                    f'{len(calls)} times in the {self.owner} (valid: 0..{len(calls) - 1})')
        else:
            value = calls[0]
            if tap.index is not None:
                if not isinstance(value, (tuple, list, _Subset)):
                    raise IndexError(
                        f'{key}: {tap} indexes the output of {tap.path!r}, but that module ran '
                        f'once in the {self.owner} and returned a single '
                        f'{type(value).__name__}, not a tuple or list')
                if not -len(value) <= tap.index < len(value):
                    raise IndexError(
                        f'{key}: {tap} is out of range: {tap.path!r} returns {len(value)} '
                        f'outputs in the {self.owner} (valid: 0..{len(value) - 1})')
                value = value[tap.index]
        return _flatten(value, key)

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class _Subset(Sequence):
    """The elements of a module's output that taps read; the length of the whole output."""

    def __init__(self, output: Sequence, needed: set[int]) -> None:
        self._len = len(output)
        self._items = {i: output[i] for i in needed if i < self._len}

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Any:
        return self._items[index % self._len]


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of a recorded value (a tensor or nested tuples/lists of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, _Subset):
        value = list(value._items.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # an inference-mode tensor has no version counter
        return None


def _copy(value: Any) -> Any:
    """A copy of the tensors of a recorded value (autograd flows through it)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, _Subset):
        value._items = {i: _copy(v) for i, v in value._items.items()}
        return value
    if isinstance(value, (tuple, list)):
        return [_copy(v) for v in value]
    return value


def run_recorded(recorders: Sequence[FeatureRecorder], run: Callable[[], Any]) -> list[str]:
    """Call ``run`` (the models' forward, inside the recorders' ``recording()``); when it changed
    tapped outputs in place, make the recorders copy those outputs and call it again.

    Returns:
        the changed taps, as ``'<owner> <path>'``.
    """
    run()
    copied = [f'{r.owner} {p}' for r in recorders for p in r.copy_mutated()]
    if copied:
        for r in recorders:
            r.clear()
        run()
    return copied


def _flatten(value: Any, key: str) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Sequence) and value and all(isinstance(v, torch.Tensor) for v in value):
        return list(value)
    raise TypeError(f'{key}: the tapped value is a {type(value).__name__}, not a tensor or a '
                    'sequence of tensors; add an index, e.g. "neck[0]"')


def scope_of(taps: Iterable[Tap]) -> str:
    """How far a model must run for its taps: 'backbone', 'neck' or 'full'."""
    roots = {t.path.split('.')[0] for t in taps}
    if roots <= {'backbone'}:
        return 'backbone'
    if roots <= {'backbone', 'neck'}:
        return 'neck'
    return 'full'


def run_to_scope(model: nn.Module, scope: str, inputs: torch.Tensor,
                 data_samples: list | None) -> Any:
    """Run ``model`` only as far as ``scope`` (:func:`scope_of`) needs."""
    if scope == 'backbone':
        return model.backbone(inputs)
    if scope == 'neck':
        return model.extract_feat(inputs)
    return model(inputs, data_samples, mode='tensor')

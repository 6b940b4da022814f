"""Resume with nothing lost: RNG states and the teacher checkpoint's identity in checkpoints."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..distiller import distiller_of


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def _numpy_state_to_plain(state: tuple) -> tuple:
    """numpy's RNG state with its key array as a tensor: loadable as weights only."""
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _numpy_state_from_plain(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached


@HOOKS.register_module()
class DistillStateHook(Hook):
    """Save what mmengine's checkpoints leave out, so a resumed run continues exactly.

    * RNG states (torch CPU and CUDA, numpy, python) at save time; restored right before the
      first iteration after resuming, so model-side randomness (MGD's masks, CRD's negatives,
      dropout) continues as in the uninterrupted run. Data augmentation drawn while mmengine
      skips the already-trained batches, or in dataloader workers, is not covered.
    * The sha256 of the teacher checkpoint; a resumed run whose teacher file changed says so.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._pending: dict | None = None
        self._teacher_sha: dict[str, str] = {}

    def _teacher_hash(self, runner) -> tuple[str, str] | None:
        model = distiller_of(runner.model)
        path = model.teacher_checkpoint if model is not None else None
        if not path or '://' in path:
            return None
        if path not in self._teacher_sha:
            self._teacher_sha[path] = file_sha256(path)
        return path, self._teacher_sha[path]

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = dict(
            torch=torch.get_rng_state(),
            cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            numpy=_numpy_state_to_plain(np.random.get_state()), python=random.getstate())
        teacher = self._teacher_hash(runner)
        if teacher is not None:
            checkpoint.setdefault('meta', {})['teacher_checkpoint'] = dict(
                path=teacher[0], sha256=teacher[1])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get('rng_state')
        saved = checkpoint.get('meta', {}).get('teacher_checkpoint')
        teacher = self._teacher_hash(runner)
        if saved and teacher and saved['sha256'] != teacher[1]:
            print_log(
                f'The teacher checkpoint changed since this run started: it was {saved["path"]} '
                f'(sha256 {saved["sha256"][:12]}...), now {teacher[0]} (sha256 '
                f'{teacher[1][:12]}...). The resumed run distils from the new teacher.',
                logger='current', level=30)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state['torch'])
        if state['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])
        np.random.set_state(_numpy_state_from_plain(state['numpy']))
        random.setstate(state['python'])

"""Resume with nothing lost: RNG states and the teacher checkpoint's identity in checkpoints."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

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


def get_rng_state() -> dict:
    """The global RNG states (torch CPU and CUDA, numpy, python), loadable as weights only."""
    return dict(torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                numpy=_numpy_state_to_plain(np.random.get_state()), python=random.getstate())


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    np.random.set_state(_numpy_state_from_plain(state['numpy']))
    random.setstate(state['python'])


@HOOKS.register_module()
class DistillStateHook(Hook):
    """Save what mmengine's checkpoints leave out, so a resumed run continues exactly.

    * RNG states (torch CPU and CUDA, numpy, python) at save time, restored right before the
      first batch after resuming is loaded. With :class:`~mmdistill.engine.loops.
      FastResumeIterBasedTrainLoop` (which :class:`~mmdistill.engine.DistillRunner` uses for
      iteration-based configs) or an epoch-based loop, random augmentation in the main process
      (``num_workers=0``) and model-side randomness (MGD's masks, CRD's negatives, dropout)
      continue as in the uninterrupted run. With mmengine's own ``IterBasedTrainLoop``, which
      skips by loading batches, they are restored before the first iteration instead (model-side
      randomness only). Workers' RNG is not covered.
    * Validation leaves the training RNG as it found it, so a run continues the same whether or
      not it validated at its checkpoint (a checkpoint saved during validation holds the state
      from before it).
    * The sha256 of the teacher checkpoint; a resumed run whose teacher file changed says so.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._pending: dict | None = None
        self._before_val: dict | None = None
        self._training = False
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
        checkpoint['rng_state'] = self._before_val or get_rng_state()
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

    def _restore(self) -> None:
        if self._pending is not None:
            state, self._pending = self._pending, None
            set_rng_state(state)

    def before_train_epoch(self, runner) -> None:
        loop = runner.train_loop
        if getattr(loop, 'skips_by_index', False) or not isinstance(loop, IterBasedTrainLoop):
            self._restore()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._restore()

    def before_train(self, runner) -> None:
        self._training = True

    def after_train(self, runner) -> None:
        self._training = False

    def before_val(self, runner) -> None:
        if self._training:
            self._before_val = get_rng_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            state, self._before_val = self._before_val, None
            set_rng_state(state)

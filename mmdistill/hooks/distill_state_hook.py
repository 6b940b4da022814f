"""Resume with nothing lost: RNG states and the teacher checkpoints' identity in checkpoints."""
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
    * The sha256 of each teacher's checkpoint file (``meta['teacher_checkpoints']``,
      ``{teacher name: dict(path, sha256)}``); a resumed run whose teacher file changed says so.
      (An EMA teacher is in the state dict itself: see
      :func:`~mmdistill.teacher.save_teacher_state`.)
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._pending: dict | None = None
        self._before_val: dict | None = None
        self._training = False
        self._teacher_sha: dict[str, str] = {}

    def _teacher_hashes(self, runner) -> dict[str, dict[str, str]]:
        """``{teacher name: dict(path, sha256)}`` of the teachers loaded from local files."""
        model = distiller_of(runner.model)
        hashes = {}
        for name, teacher in (model.teachers.items() if model is not None else ()):
            path = teacher.checkpoint
            if path and '://' not in path:
                if path not in self._teacher_sha:
                    self._teacher_sha[path] = file_sha256(path)
                hashes[name] = dict(path=path, sha256=self._teacher_sha[path])
        return hashes

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = self._before_val or get_rng_state()
        hashes = self._teacher_hashes(runner)
        if hashes:
            checkpoint.setdefault('meta', {})['teacher_checkpoints'] = hashes

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get('rng_state')
        meta = checkpoint.get('meta', {})
        saved = meta.get('teacher_checkpoints') or (  # as saved before there were several
            {'teacher': meta['teacher_checkpoint']} if 'teacher_checkpoint' in meta else {})
        for name, now in self._teacher_hashes(runner).items():
            was = saved.get(name)
            if was and was['sha256'] != now['sha256']:
                which = '' if name == 'teacher' else f' of model.teachers.{name}'
                print_log(
                    f'The teacher checkpoint{which} changed since this run started: it was '
                    f'{was["path"]} (sha256 {was["sha256"][:12]}...), now {now["path"]} (sha256 '
                    f'{now["sha256"][:12]}...). The resumed run distils from the new teacher.',
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

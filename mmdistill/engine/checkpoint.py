"""mmengine's training checkpoints: loading under torch's weights-only default (torch >= 2.6),
and writing that a crash at any moment cannot corrupt (:class:`AtomicCheckpointHook`)."""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS


def mmengine_checkpoint_globals() -> list:
    """The non-tensor types mmengine 0.10 writes into its training checkpoints.

    The message hub's ``HistoryBuffer`` (with numpy arrays and scalars, and its statistics
    methods pickled as ``getattr(HistoryBuffer, name)``) and numpy's dtypes. Allowing
    ``getattr`` lets the unpickler look up attributes of objects it has already built from
    allowed types; calling what it finds still needs that callable to be allowed.
    """
    from mmengine.logging import HistoryBuffer
    if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
        from numpy._core.multiarray import _reconstruct, scalar
    else:
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in ('float64', 'float32', 'float16', 'int64', 'int32',
                                          'uint8', 'bool')]
    return [HistoryBuffer, getattr, np.ndarray, np.dtype, _reconstruct, scalar, *dtypes]


def allow_mmengine_checkpoints() -> None:
    """Allow exactly :func:`mmengine_checkpoint_globals` in ``torch.load(weights_only=True)``.

    Called by ``import mmdistill`` (so by ``custom_imports``): mmengine's own Runner, under
    mmdet's, mmseg's or mmpretrain's tools, then resumes from and tests its checkpoints.
    ``weights_only`` stays on: a file with any other type is still refused.
    """
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` to write to; once the block ends it is flushed to disk
    (``fsync``) and renamed onto ``path`` (``os.replace``, atomic on POSIX), and the directory
    entry is synced. A process killed before the rename leaves ``path`` as it was (and a stale
    ``<path>.tmp``, replaced by the next write); an exception removes the temporary file."""
    tmp = f'{path}.tmp'
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    directory = os.open(osp.dirname(osp.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_text_atomic(path: str, text: str) -> None:
    """Replace the file ``path`` by ``text`` in one step (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            f.write(text)


def is_local_path(path: str, backend_args: dict | None = None) -> bool:
    """Whether mmengine writes ``path`` to the local file system (not a remote backend)."""
    from mmengine.fileio import LocalBackend, get_file_backend
    return isinstance(get_file_backend(path, backend_args=backend_args), LocalBackend)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, crash-safe; :class:`~mmdistill.engine.DistillRunner` uses it
    in place of ``CheckpointHook``.

    The stock hook truncates and rewrites ``last_checkpoint`` in place (a kill in between leaves
    it empty, and ``--resume`` fails) and, with ``max_keep_ckpts``, deletes the oldest checkpoint
    before writing the new one (with ``max_keep_ckpts=1`` a kill during the write leaves
    ``last_checkpoint`` naming a deleted file). Here the checkpoint is written first (atomically
    by :meth:`DistillRunner.save_checkpoint`), then ``last_checkpoint`` is replaced atomically,
    and only then is the oldest checkpoint deleted. The runtime info the checkpoint carries
    (``keep_ckpt_ids``, ``last_ckpt``) is the stock hook's.
    """

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        stale_step = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale_step = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, backend_args=self.backend_args,
                               **self.args)
        if not is_main_process():
            return
        write_text_atomic(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if stale_step is not None:
            stale = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(stale_step))
            if self.file_backend.isfile(stale):
                self.file_backend.remove(stale)
            elif self.file_backend.isdir(stale):  # deepspeed's checkpoints are directories
                self.file_backend.rmtree(stale)


__all__ = ['AtomicCheckpointHook', 'allow_mmengine_checkpoints', 'atomic_path', 'is_local_path',
           'mmengine_checkpoint_globals', 'write_text_atomic']

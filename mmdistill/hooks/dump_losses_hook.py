"""Write every training iteration's losses, at full precision, to a json-lines file per rank."""
from __future__ import annotations

import hashlib
import json
import os.path as osp

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpLossesHook(Hook):
    """Append ``{"iter": i, "rank": r, "<loss name>": value, ...}`` lines to
    ``<work_dir>/losses_rank<r>.jsonl`` (or ``out_dir``): the exact per-rank values that the
    logger smooths and shows for rank 0 only. With ``digest=True`` each line also carries the
    sha1 of the trainable weights (student and loss modules), to compare ranks or runs."""

    def __init__(self, out_dir: str | None = None, digest: bool = False) -> None:
        self.out_dir = out_dir
        self.digest = digest

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        rank = get_rank()
        row = dict(iter=runner.iter + 1, rank=rank)
        row.update({k: float(v.detach()) for k, v in (outputs or {}).items()})
        if self.digest:
            model = getattr(runner.model, 'module', runner.model)
            sha = hashlib.sha1()
            for value in model.state_dict().values():
                sha.update(value.detach().cpu().contiguous().numpy().tobytes())
            row['digest'] = sha.hexdigest()
        path = osp.join(self.out_dir or runner.work_dir, f'losses_rank{rank}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps(row) + '\n')

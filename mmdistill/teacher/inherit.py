"""``init_student``: the student starts from the teacher's weights where they fit."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from mmengine.logging import print_log
from torch import nn


@torch.no_grad()
def inherit_weights(teacher: nn.Module, student: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Copy the teacher's tensors under ``prefixes`` into the student where names and shapes
    match (``init_student``); log what was copied and what did not match."""
    prefixes = tuple(prefixes)
    s_state = student.state_dict()
    copied, skipped = [], []
    for name, value in teacher.state_dict().items():
        if not name.startswith(prefixes):
            continue
        if name in s_state and s_state[name].shape == value.shape:
            s_state[name].copy_(value)
            copied.append(name)
        else:
            skipped.append(name)
    print_log(f'init_student: copied {len(copied)} teacher tensors under {list(prefixes)} '
              f'into the student; {len(skipped)} did not match in name or shape'
              + (f' (e.g. {skipped[:5]})' if skipped else ''), logger='current')
    return copied

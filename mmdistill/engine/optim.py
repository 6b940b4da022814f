"""bf16 mixed precision where mmengine 0.10.7's ``AmpOptimWrapper`` does not go: the CPU."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` with the forward under ``torch.autocast(device, bfloat16)``.

    bf16 keeps float32's exponent range, so no loss scaling is needed; parameters, gradients and
    the optimizer state stay float32. The device is the model's (CPU: AMX/AVX-512 bf16 kernels
    where the CPU has them). ``tools/train.py --amp`` picks it on machines without CUDA.
    """

    @contextmanager
    def optim_context(self, model: nn.Module):
        param = next(model.parameters(), None)
        device = param.device.type if param is not None else 'cpu'
        with super().optim_context(model), torch.autocast(device, dtype=torch.bfloat16):
            yield


__all__ = ['BF16OptimWrapper']

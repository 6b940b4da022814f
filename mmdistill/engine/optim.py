"""bf16 mixed precision where mmengine 0.10.7's ``AmpOptimWrapper`` does not go: the CPU."""
from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from .precision import native_dtypes


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` with the forward under ``torch.autocast(device, bfloat16)``.

    bf16 keeps float32's exponent range, so no loss scaling is needed; parameters, gradients and
    the optimizer state stay float32. The device is the model's (CPU: AMX/AVX-512 bf16 kernels
    where the CPU has them; a warning, once, where it emulates bf16). ``tools/train.py --amp``
    picks it on CPUs with native bf16.
    """

    #: the device type the last step ran on (checked for native bf16 when it changes)
    _device_type: str | None = None

    @contextmanager
    def optim_context(self, model: nn.Module):
        param = next(model.parameters(), None)
        device = param.device.type if param is not None else 'cpu'
        if device != self._device_type:
            self._device_type = device
            if device in ('cpu', 'cuda') and 'bf16' not in native_dtypes(device):
                print_log(f'BF16OptimWrapper: bf16 is emulated on this {device}: the step is '
                          'likely slower than in fp32 (OptimWrapper)', logger='current',
                          level=logging.WARNING)
        with super().optim_context(model), torch.autocast(device, dtype=torch.bfloat16):
            yield


__all__ = ['BF16OptimWrapper']

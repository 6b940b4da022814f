"""Helpers shared by the losses: precision handling and pooling."""
from __future__ import annotations

import torch

#: dtypes whose softmaxes and reductions the losses compute in float32
HALF = (torch.float16, torch.bfloat16)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a loss computes in for input ``x``: float64 stays, everything else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is half precision (fp16, bf16), otherwise unchanged."""
    return x.float() if x.dtype in HALF else x


def sample_std(x: torch.Tensor, dim: tuple[int, ...]) -> torch.Tensor:
    """The unbiased standard deviation of ``x`` over ``dim`` (kept), 0 where those dims hold a
    single value (a 1x1 map of a batch of one), where the unbiased estimate would be NaN: one
    value has no spread, and standardising it gives 0 whatever the std is."""
    count = 1
    for d in dim:
        count *= x.shape[d]
    return x.std(dim=dim, correction=1 if count > 1 else 0, keepdim=True)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C) by global average pooling; any other shape -> (N, -1)."""
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    return x.reshape(x.shape[0], -1)

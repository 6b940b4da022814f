"""Fast forms of CWD: the divergence and its gradient in one pass.

Autograd through :func:`~mmdistill.losses.cwd.channel_kl` reads and writes several full-size
temporaries (scaled logits, both log-softmaxes, ``p_T``, their products) forward and backward.
Here each row's exponentials are computed once and kept in cache, so the maps are read once and
the gradient written once, two exponentials per element: compiled (``CWDLoss(compiled=True)``)
or, on the CPU, the hand-written kernel (:mod:`.cwd_kernel`, ``CWDLoss(cpu_kernel=True)``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from mmdistill.losses.fast.compiled import compiled
from mmdistill.losses.fast.cwd_kernel import channel_kl_and_grad_cpu
from mmdistill.losses.fast.value_and_grad import value_and_grad


@compiled
def channel_kl_and_grad(logits_S: Tensor, logits_T: Tensor, tau: float, scale: float,
                        want_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``scale * channel_kl(S, T, tau)`` and its gradient w.r.t. ``S``, both ``(N*C, H*W)``.

    With ``s = S / tau``, ``e_s = exp(s - max s)``, ``Z_s = sum e_s`` per row (same for ``t``)::

        KL_row = sum(e_t (t - s)) / Z_t + log Z_s + max s - log Z_t - max t
        d KL_row / d S = (e_s / Z_s - e_t / Z_t) / tau
    """
    inv_tau = 1.0 / tau
    s = logits_S * inv_tau
    t = logits_T * inv_tau
    max_s = s.amax(1, keepdim=True)
    max_t = t.amax(1, keepdim=True)
    exp_s = torch.exp(s - max_s)
    exp_t = torch.exp(t - max_t)
    z_s = exp_s.sum(1, keepdim=True)
    z_t = exp_t.sum(1, keepdim=True)
    kl = ((exp_t * (t - s)).sum(1, keepdim=True) / z_t
          + (max_s + torch.log(z_s)) - (max_t + torch.log(z_t))).sum()
    if not want_grad:
        return kl * scale, None
    return kl * scale, (exp_s / z_s - exp_t / z_t) * (scale * inv_tau)


def _kernel_core(logits_S: Tensor, logits_T: Tensor, tau: float, scale: float, want_grad: bool,
                 compiled: bool = False) -> tuple[Tensor, Tensor | None]:
    """:func:`~.cwd_kernel.channel_kl_and_grad_cpu` as a core of :func:`value_and_grad`."""
    return channel_kl_and_grad_cpu(logits_S, logits_T, tau, scale, want_grad)


def scaled_channel_kl(logits_S: Tensor, logits_T: Tensor, tau: float, scale: float,
                      cpu_kernel: bool = False) -> Tensor:
    """``scale * channel_kl(S, T, tau)`` of ``(N*C, H*W)`` logits, compiled (``cpu_kernel``:
    the CPU kernel, which the caller has checked is available), differentiable w.r.t.
    ``logits_S`` through the gradient the same pass computes."""
    core = _kernel_core if cpu_kernel else channel_kl_and_grad
    return value_and_grad(core, logits_S, logits_T, tau, scale, compiled=True)


__all__ = ['channel_kl_and_grad', 'scaled_channel_kl']

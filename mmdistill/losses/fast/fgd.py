"""Fast form of FGD: the loss of one level from a few reductions, with a hand-written backward.

The definition (:meth:`mmdistill.losses.fgd.FGDLoss.loss_by_definition`) writes several
``(N, C, H, W)`` temporaries forward and as many backward. The loss only needs a few reductions
of the maps ``S`` and ``T`` (``(N, C, HW)`` views):

* ``sum_hw |F|`` (N, C) and ``sum_c |F|`` (N, HW) of both (attentions, attention loss),
* the GcBlock logits ``w . F`` (N, HW) and contexts ``F @ softmax(logits)`` (N, C) of both,
* with ``d = S - T``: ``Q1 = sum_hw d^2 P`` (``P = S_t * (alpha M_fg + beta M_bg)``),
  ``Q2 = sum_hw d^2`` and ``D = sum_hw d`` (N, C), since
  ``focal = sum(C_t * Q1) / N`` and, with the GcBlock difference ``a = add_s - add_t``
  (N, C), ``global = sum((d + a)^2) / N = (sum Q2 + 2 sum(a D) + HW sum a^2) / N``.

On the CPU, :mod:`.fgd_kernel` computes the loss and every gradient in one call (the reductions,
the steps on the small tensors, the gradient of ``S``; in the forward). Elsewhere the forward
computes the reductions in a few passes over memory (:mod:`.fgd_blocked`, eager and block by
block; or :mod:`.fgd_compiled`); everything after that is on (N, C) and (N, HW) tensors. The
backward gets the gradients of those small tensors from autograd on the small graph, then the
gradient of ``S`` in one pass::

    dS = 2 d (g_Q2 + g_Q1 P) + sign(S) (g_Ac + g_As) + g_D + w_s g_ls + g_ctx p_s

(plus a pass over ``S`` and ``T`` for the gradients of the contexts' softmax weights, and one
for the ``conv_mask`` weights); the channel-add parameters get theirs from the small graph. The
global term is exact in its gradient; its value, summed from the expansion above, loses digits
only when ``a`` nearly cancels ``d`` in every channel. Not twice differentiable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from mmdistill.losses.fast import fgd_blocked, fgd_compiled, fgd_kernel
from mmdistill.losses.fast.value_and_grad import scale_saved_grad

#: the :class:`~mmdistill.losses.fgd.FGDLoss` whose GcBlocks and weights a fast pass reads
FGDModule = nn.Module


def _spatial_attention(abs_hw: Tensor, c: int, temp: float) -> Tensor:
    """``S_F = HW softmax_hw(mean_c |F| / temp)`` (N, HW) from ``sum_c |F|`` (N, HW)."""
    return abs_hw.shape[1] * F.softmax(abs_hw / (c * temp), dim=1)


def _channel_attention(abs_c: Tensor, hw: int, temp: float) -> Tensor:
    """``C_F = C softmax_c(mean_hw |F| / temp)`` (N, C) from ``sum_hw |F|`` (N, C)."""
    return abs_c.shape[1] * F.softmax(abs_c / (hw * temp), dim=1)


def _context_weights(ls: Tensor, lt: Tensor, loss: FGDModule) -> tuple[Tensor, Tensor]:
    """The GcBlocks' spatial softmax weights ``p_s, p_t`` (N, HW) from their logits (no bias)."""
    dtype = ls.dtype
    return (F.softmax(ls + loss.conv_mask_s.bias.to(dtype), dim=1),
            F.softmax(lt + loss.conv_mask_t.bias.to(dtype), dim=1))


def _reductions_blocked(S3: Tensor, T3: Tensor, pix_weight: Tensor, loss: FGDModule, w_s: Tensor,
                        w_t: Tensor) -> tuple[Tensor, ...]:
    """The reductions by the eager passes: teacher, student and difference, both contexts."""
    c, hw = S3.shape[1:]
    at_c, at_hw, lt = fgd_blocked.teacher_pass(T3, w_t)
    spatial_t = _spatial_attention(at_hw, c, loss.temp)
    channel_t = _channel_attention(at_c, hw, loss.temp)
    weight = spatial_t * pix_weight  # (N, HW)
    as_c, as_hw, ls, q1, q2, dsum = fgd_blocked.student_pass(S3, T3, w_s, weight)
    p_s, p_t = _context_weights(ls, lt, loss)
    ctx_s = fgd_blocked.rowdot(S3, p_s)
    ctx_t = fgd_blocked.rowdot(T3, p_t)
    return spatial_t, channel_t, weight, p_s, p_t, as_c, as_hw, q1, q2, dsum, ctx_s, ctx_t


def _reductions_compiled(S3: Tensor, T3: Tensor, pix_weight: Tensor, loss: FGDModule, w_s: Tensor,
                         w_t: Tensor) -> tuple[Tensor, ...]:
    """The reductions by the compiled passes: channel sums, then location sums."""
    c, hw = S3.shape[1:]
    as_hw, at_hw, ls, lt = fgd_compiled.column_stats(
        S3, T3, w_s[0].reshape(c, 1), w_t[0].reshape(c, 1), compiled=True)
    spatial_t = _spatial_attention(at_hw, c, loss.temp)
    weight = spatial_t * pix_weight  # (N, HW)
    p_s, p_t = _context_weights(ls, lt, loss)
    as_c, at_c, dsum, q2, q1, ctx_s, ctx_t = fgd_compiled.row_stats(
        S3, T3, weight[:, None], p_s[:, None], p_t[:, None], torch.ones_like(weight[:, None]),
        compiled=True)
    channel_t = _channel_attention(at_c, hw, loss.temp)
    return spatial_t, channel_t, weight, p_s, p_t, as_c, as_hw, q1, q2, dsum, ctx_s, ctx_t


#: the forms of the passes over the maps
REDUCTIONS = dict(compiled=_reductions_compiled, blocked=_reductions_blocked)


def _loss_from_reductions(loss: FGDModule, spatial_t: Tensor, channel_t: Tensor, as_c: Tensor,
                          as_hw: Tensor, q1: Tensor, q2: Tensor, dsum: Tensor, ctx_s: Tensor,
                          ctx_t: Tensor) -> Tensor:
    """The FGD loss from the reductions of the maps (see the module docstring)."""
    n, c = as_c.shape
    hw = as_hw.shape[1]
    spatial_s = _spatial_attention(as_hw, c, loss.temp)
    channel_s = _channel_attention(as_c, hw, loss.temp)
    focal = (channel_t * q1).sum() / n
    mask_loss = ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n
    add_s, add_t = loss.channel_adds(ctx_s, ctx_t)
    add = add_s - add_t
    rela = (q2.sum() + 2 * (add * dsum).sum() + hw * add.square().sum()) / n
    return focal + loss.gamma_fgd * mask_loss + loss.lambda_fgd * rela


def _params(loss: FGDModule) -> tuple[Tensor, ...]:
    """The parameters of ``loss`` the fast form sees, in the order its backward returns their
    gradients."""
    return (loss.conv_mask_s.weight, loss.conv_mask_s.bias, loss.conv_mask_t.weight,
            loss.conv_mask_t.bias, *loss.channel_add_conv_s.parameters(),
            *loss.channel_add_conv_t.parameters())


class _FGDFunction(torch.autograd.Function):
    """The FGD loss of one level from the reductions, and its hand-written backward."""

    @staticmethod
    def forward(ctx, S: Tensor, T: Tensor, pix_weight: Tensor, loss: FGDModule, passes: str,
                *params: Tensor) -> Tensor:
        n, c, h, w = S.shape
        dtype = S.dtype
        S3 = S.reshape(n, c, h * w)
        T3 = T.reshape(n, c, h * w)
        w_s = loss.conv_mask_s.weight.reshape(1, 1, c).to(dtype).expand(n, 1, c)
        w_t = loss.conv_mask_t.weight.reshape(1, 1, c).to(dtype).expand(n, 1, c)
        spatial_t, channel_t, weight, p_s, p_t, *small = REDUCTIONS[passes](
            S3, T3, pix_weight, loss, w_s, w_t)
        out = _loss_from_reductions(loss, spatial_t, channel_t, *small)
        ctx.loss, ctx.passes = loss, passes
        ctx.save_for_backward(S, T, weight, spatial_t, channel_t, p_s, p_t, *small)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        loss, passes = ctx.loss, ctx.passes
        S, T, weight, spatial_t, channel_t, p_s, p_t, *small = ctx.saved_tensors
        n, c, h, w = S.shape
        S3 = S.reshape(n, c, h * w)
        T3 = T.reshape(n, c, h * w)
        add_params = [p for p in (*loss.channel_add_conv_s.parameters(),
                                  *loss.channel_add_conv_t.parameters()) if p.requires_grad]

        # gradients of the small tensors (and of the GcBlock channel-add parameters)
        leaves = [x.detach().requires_grad_() for x in small]
        with torch.enable_grad():
            out = _loss_from_reductions(loss, spatial_t, channel_t, *leaves)
            grads = torch.autograd.grad(out, leaves + add_params, grad_out, allow_unused=True)
        g_as_c, g_as_hw, g_q1, g_q2, g_dsum, g_ctx_s, g_ctx_t = (
            torch.zeros_like(x) if g is None else g for x, g in zip(small, grads[:7]))
        add_grads = dict(zip(map(id, add_params), grads[7:]))

        w_s = loss.conv_mask_s.weight.reshape(c).to(S.dtype)
        # through the softmax weights of the contexts (one pass over S and T), then the logits
        if passes == 'compiled':
            g_p_s, g_p_t = fgd_compiled.column_grads(S3, T3, g_ctx_s[..., None],
                                                     g_ctx_t[..., None], compiled=True)
        else:
            g_p_s = torch.bmm(g_ctx_s[:, None, :], S3)[:, 0]
            g_p_t = torch.bmm(g_ctx_t[:, None, :], T3)[:, 0]
        g_ls = p_s * (g_p_s - (p_s * g_p_s).sum(1, keepdim=True))
        g_lt = p_t * (g_p_t - (p_t * g_p_t).sum(1, keepdim=True))

        # dS and the conv_mask weight gradients sum_hw g_l F (compiled: in the same pass)
        grad_S = rows_s = rows_t = None
        if passes == 'compiled':
            grad_S, rows_s, rows_t = fgd_compiled.student_grad_and_rows(
                S3, T3, (2 * g_q2)[..., None], (2 * g_q1)[..., None], weight[:, None],
                g_as_c[..., None], g_as_hw[:, None], g_dsum[..., None], w_s[:, None],
                g_ls[:, None], g_ctx_s[..., None], p_s[:, None], g_lt[:, None], compiled=True)
            grad_S = grad_S.reshape(S.shape)
        elif ctx.needs_input_grad[0]:
            grad_S = fgd_blocked.student_grad(S3, T3, g_q1, g_q2, weight, g_as_c, g_as_hw, g_dsum,
                                              w_s, g_ls, g_ctx_s, p_s).reshape(S.shape)
        if rows_s is None:
            rows_s, rows_t = fgd_blocked.rowdot(S3, g_ls), fgd_blocked.rowdot(T3, g_lt)
        return (grad_S, None, None, None, None,
                *_param_grads(loss, rows_s.sum(0), g_ls.sum(), rows_t.sum(0), g_lt.sum(),
                              add_grads))


def _param_grads(loss: FGDModule, rows_s: Tensor, bias_s: Tensor, rows_t: Tensor, bias_t: Tensor,
                 add_grads: dict[int, Tensor]) -> list[Tensor | None]:
    """The gradients of :func:`_params`: the conv_mask weights ``sum_n sum_hw g_l F`` (``rows``,
    (C,)), their biases ``sum g_l`` (``bias``, scalars), the channel-add parameters' from
    ``add_grads`` (by ``id``); None for a frozen parameter."""

    def as_param(g: Tensor, p: Tensor) -> Tensor | None:
        return g.reshape(p.shape).to(p.dtype) if p.requires_grad else None

    m_s, m_t = loss.conv_mask_s, loss.conv_mask_t
    grads = [as_param(rows_s, m_s.weight), as_param(bias_s, m_s.bias),
             as_param(rows_t, m_t.weight), as_param(bias_t, m_t.bias)]
    return grads + [add_grads.get(id(p)) if p.requires_grad else None
                    for p in (*loss.channel_add_conv_s.parameters(),
                              *loss.channel_add_conv_t.parameters())]


class _FGDKernelFunction(torch.autograd.Function):
    """The FGD loss of one level by the CPU kernel (:mod:`.fgd_kernel`), with every gradient
    computed in the forward, for a loss gradient of 1."""

    @staticmethod
    def forward(ctx, S: Tensor, T: Tensor, pix_weight: Tensor, loss: FGDModule, grad_mode: bool,
                *params: Tensor) -> Tensor:
        n, c, h, w = S.shape
        eps = (loss.channel_add_conv_s[1].eps, loss.channel_add_conv_t[1].eps)
        value, grad_S, grads = fgd_kernel.loss_and_grads(
            S.reshape(n, c, h * w), T.reshape(n, c, h * w), pix_weight.contiguous(), params, eps,
            loss.temp, loss.gamma_fgd, loss.lambda_fgd,
            want_grad=grad_mode and any(ctx.needs_input_grad))
        if grad_S is not None:
            ctx.save_for_backward(grad_S.reshape(S.shape), *grads)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        grad_S, *grads = ctx.saved_tensors
        needs = ctx.needs_input_grad
        return (scale_saved_grad(grad_S, grad_out) if needs[0] else None, None, None, None, None,
                *(scale_saved_grad(g, grad_out) if need else None
                  for g, need in zip(grads, needs[5:])))


def fgd_loss_fast(S: Tensor, T: Tensor, pix_weight: Tensor, loss: FGDModule,
                  compiled: bool = False, cpu_kernel: bool = True) -> Tensor:
    """The value of :meth:`~mmdistill.losses.fgd.FGDLoss.loss_by_definition`, fast.

    Args:
        S (Tensor): (N, C, H, W) student map, aligned to the teacher's channels, contiguous.
        T (Tensor): (N, C, H, W) teacher map, detached, contiguous, same dtype.
        pix_weight (Tensor): (N, H*W) ``alpha_fgd * Mask_fg + beta_fgd * Mask_bg``.
        loss (FGDLoss): the module whose GcBlocks, ``temp``, ``gamma_fgd`` and ``lambda_fgd``
            are used; its parameters get gradients.
        compiled (bool): use the compiled passes instead of the blocked eager ones (where the
            CPU kernel does not run).
        cpu_kernel (bool): on float32 and float64 CPU maps (the loss's parameters in the same
            dtype), the hand-tiled kernel (:mod:`.fgd_kernel`) where it builds.

    Returns:
        Tensor: scalar loss.
    """
    params = _params(loss)
    if cpu_kernel and fgd_kernel.available(S) and all(p.dtype == S.dtype for p in params):
        return _FGDKernelFunction.apply(S, T, pix_weight.to(S.dtype), loss,
                                        torch.is_grad_enabled(), *params)
    passes = 'compiled' if compiled else 'blocked'
    return _FGDFunction.apply(S, T, pix_weight, loss, passes, *params)

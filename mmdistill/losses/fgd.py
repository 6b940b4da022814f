"""FGD: Focal and Global Knowledge Distillation for Detectors.

Yang et al., "Focal and Global Knowledge Distillation for Detectors", CVPR 2022.
Official code: https://github.com/yzd-v/FGD (``mmdet/distillation/losses/fgd.py``).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.compiled import compiled
from mmdistill.losses.utils import HALF
from mmdistill.registry import DISTILL_LOSSES


def fgd_attention(feat: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """Spatial and channel attention of a feature map.

    ``S = H*W * softmax_hw(mean_c |F| / temp)``, ``C = C * softmax_c(mean_hw |F| / temp)``.

    Args:
        feat (Tensor): (N, C, H, W) feature map.
        temp (float): Temperature.

    Returns:
        tuple[Tensor, Tensor]: spatial attention (N, H, W) and channel attention (N, C).
    """
    n, c, h, w = feat.shape
    value = feat.abs()
    spatial = value.mean(dim=1).reshape(n, h * w)
    spatial = (h * w) * F.softmax(spatial / temp, dim=1)
    channel = value.mean(dim=(2, 3))
    channel = c * F.softmax(channel / temp, dim=1)
    return spatial.reshape(n, h, w), channel


def pixel_standardise(feat: Tensor, eps: float = 1e-5) -> Tensor:
    """Standardise the channel vector of every location of ``feat`` (N, C, H, W): mean 0,
    (biased) variance 1 over C, as a LayerNorm over channels without affine parameters."""
    mean = feat.mean(dim=1, keepdim=True)
    var = feat.var(dim=1, unbiased=False, keepdim=True)
    return (feat - mean) * torch.rsqrt(var + eps)


def fgd_masks(gt_bboxes: Sequence[Tensor], img_shape: Sequence[int], height: int, width: int,
              dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Foreground and background masks of FGD, built for the whole batch at once.

    Each box (input pixels ``x1, y1, x2, y2``) is mapped to the ``height x width`` grid with
    ``wmin = floor(x1 / img_w * W)``, ``wmax = ceil(x2 / img_w * W)`` (same for h); its cells
    ``[hmin, hmax] x [wmin, wmax]`` (inclusive, clipped to the grid) get
    ``1 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))`` (area of the unclipped range); where
    boxes overlap the largest value is kept. The background mask is 1 where the foreground
    mask is 0, divided by its per-image sum when that is positive.

    Args:
        gt_bboxes (Sequence[Tensor]): N tensors (n_i, 4), xyxy in input pixels.
        img_shape (Sequence[int]): (img_h, img_w) of the padded batch input.
        height (int): Grid height H.
        width (int): Grid width W.
        dtype (torch.dtype): dtype of the masks.
        device (torch.device): device of the masks.

    Returns:
        tuple[Tensor, Tensor]: ``mask_fg`` and ``mask_bg``, each (N, H, W).
    """
    num_imgs = len(gt_bboxes)
    boxes = [getattr(b, 'tensor', b).reshape(-1, 4) for b in gt_bboxes]
    counts = torch.tensor([b.shape[0] for b in boxes], dtype=torch.long)
    img_idx = torch.repeat_interleave(torch.arange(num_imgs), counts).to(device, non_blocking=True)
    boxes = torch.cat(boxes).to(device)
    if not boxes.is_floating_point():
        boxes = boxes.float()
    img_h, img_w = float(img_shape[0]), float(img_shape[1])
    # Same operation order as the official code (divide, then multiply) so that floor/ceil
    # agree on values that land exactly on a cell edge.
    wmin = torch.floor(boxes[:, 0] / img_w * width)
    wmax = torch.ceil(boxes[:, 2] / img_w * width)
    hmin = torch.floor(boxes[:, 1] / img_h * height)
    hmax = torch.ceil(boxes[:, 3] / img_h * height)
    area = 1.0 / ((hmax + 1 - hmin) * (wmax + 1 - wmin)).to(dtype)  # (B,)

    ys = torch.arange(height, device=device, dtype=hmin.dtype)
    xs = torch.arange(width, device=device, dtype=wmin.dtype)
    rows = (ys >= hmin[:, None]) & (ys <= hmax[:, None])  # (B, H)
    cols = (xs >= wmin[:, None]) & (xs <= wmax[:, None])  # (B, W)
    inside = rows[:, :, None] & cols[:, None, :]  # (B, H, W)
    per_box = torch.where(inside, area[:, None, None], area.new_zeros(()))
    mask_fg = torch.zeros(num_imgs, height * width, dtype=dtype, device=device)
    index = img_idx[:, None].expand(-1, height * width)
    mask_fg.scatter_reduce_(0, index, per_box.reshape(-1, height * width), 'amax')
    mask_fg = mask_fg.reshape(num_imgs, height, width)

    mask_bg = (mask_fg == 0).to(dtype)
    # An image whose grid is all foreground keeps an all-zero background mask.
    mask_bg = mask_bg / mask_bg.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    return mask_fg, mask_bg


def _last_zero_init(block: nn.Sequential) -> None:
    nn.init.constant_(block[-1].weight, 0)
    nn.init.constant_(block[-1].bias, 0)


def _kaiming_fan_in(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, a=0, mode='fan_in', nonlinearity='relu')
    nn.init.constant_(conv.bias, 0)


def _apply(module: nn.Module, x: Tensor, out_dtype: torch.dtype) -> Tensor:
    """Run ``module`` on ``x`` cast to the module's parameter dtype, return ``out_dtype``."""
    param_dtype = next(module.parameters()).dtype
    return module(x.to(param_dtype)).to(out_dtype)


# Elements per thread in a block of the blocked passes on the CPU: a block of the student, the
# teacher and a few temporaries of this size stays in each core's cache, so that a pass reads the
# features from memory once, and the block is large enough that the per-op overhead (and the
# synchronisation of the threads of each op) stays small.
_CPU_BLOCK_PER_THREAD = 1 << 18


def _blocks(n: int, c: int, hw: int, device: torch.device):
    """Slices ``(images, channels)`` that cover an ``(N, C, HW)`` tensor block by block.

    On the CPU, blocks of about ``_CPU_BLOCK_PER_THREAD`` elements per thread (several images
    when one image is smaller, else channel ranges of one image); elsewhere (CUDA) the whole
    tensor at once.
    """
    if device.type != 'cpu':
        yield slice(0, n), slice(0, c)
        return
    block = _CPU_BLOCK_PER_THREAD * max(1, torch.get_num_threads())
    if c * hw <= block:
        step = max(1, block // (c * hw))
        for i in range(0, n, step):
            yield slice(i, min(n, i + step)), slice(0, c)
    else:
        step = max(1, block // hw)
        for i in range(n):
            for j in range(0, c, step):
                yield slice(i, i + 1), slice(j, min(c, j + step))


def _rowdot(x: Tensor, v: Tensor, out: Tensor | None = None) -> Tensor:
    """``(B, R, HW) x (B, HW) -> (B, R)``: the dot product of every row of ``x[b]`` with ``v[b]``.

    One matrix-vector product per image (``torch.mv`` reads the rows at full speed on the CPU,
    where ``bmm`` with a vector does not).
    """
    if out is None:
        out = x.new_empty(x.shape[:2])
    for i in range(x.shape[0]):
        torch.mv(x[i], v[i], out=out[i])
    return out


def _stats(x: Tensor, abs_c: Tensor, abs_hw: Tensor, logits: Tensor, weight: Tensor,
           ones: Tensor) -> Tensor:
    """For a block ``x`` (B, R, HW): write ``sum_hw |x|`` to ``abs_c`` (B, R), add ``sum_r |x|`` to
    ``abs_hw`` and the 1x1 conv ``weight . x`` (no bias) to ``logits`` (B, 1, HW views), with
    ``weight`` and ``ones`` (B, 1, R); return ``|x|``."""
    value = x.abs()
    torch.sum(value, 2, out=abs_c)
    abs_hw.baddbmm_(ones, value)
    logits.baddbmm_(weight, x)
    return value


# Compiled passes (``FGDLoss(compiled=True)``): the same reductions as the blocked eager passes,
# each a whole-level function that Inductor turns into one fused loop nest over (N, C, HW)
# maps, so that the forward reads S and T twice and the backward twice, writing dS once.
def _channel_sum(x: Tensor) -> Tensor:
    """``(N, C, HW) -> (N, HW)``: the sum over channels, in groups of 16 channels (or the largest
    power of two below that dividing C): compiled, the inner loop then walks 16 channel rows at a
    time instead of all C, which the hardware prefetchers follow (4x faster at 256 channels)."""
    n, c, hw = x.shape
    k = next(k for k in (16, 8, 4, 2, 1) if c % k == 0)
    return x.reshape(n, c // k, k, hw).sum(2).sum(1)


@compiled
def _column_stats(S3: Tensor, T3: Tensor, w_s: Tensor,
                  w_t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(N, C, HW)`` maps, ``(C, 1)`` conv_mask weights -> ``(N, HW)`` each: ``sum_c |S|``,
    ``sum_c |T|``, ``w_s . S``, ``w_t . T``."""
    return (_channel_sum(S3.abs()), _channel_sum(T3.abs()), _channel_sum(S3 * w_s),
            _channel_sum(T3 * w_t))


@compiled
def _row_stats(S3: Tensor, T3: Tensor, weight: Tensor, p_s: Tensor, p_t: Tensor,
               ones: Tensor) -> tuple[Tensor, ...]:
    """``(N, C, HW)`` maps, ``(N, 1, HW)`` weights -> ``(N, C)`` each: ``sum_hw |S|``,
    ``sum_hw |T|``, ``D``, ``Q2``, ``Q1``, ``ctx_s``, ``ctx_t`` (see ``_FGDFunction``).

    ``ones`` (N, 1, HW) multiplies the unweighted sums so that all seven share the loop nest of
    the weighted ones: one pass over S and T instead of two (1.6x faster)."""
    d = S3 - T3
    d2 = d * d
    return ((S3.abs() * ones).sum(2), (T3.abs() * ones).sum(2), (d * ones).sum(2),
            (d2 * ones).sum(2), (d2 * weight).sum(2), (S3 * p_s).sum(2), (T3 * p_t).sum(2))


@compiled
def _column_grads(S3: Tensor, T3: Tensor, g_ctx_s: Tensor,
                  g_ctx_t: Tensor) -> tuple[Tensor, Tensor]:
    """``(N, C, 1)`` context gradients -> ``(N, HW)``: their products with every column."""
    return _channel_sum(S3 * g_ctx_s), _channel_sum(T3 * g_ctx_t)


@compiled
def _grad_S(S3: Tensor, T3: Tensor, two_q2: Tensor, two_q1: Tensor, weight: Tensor,
            g_sign_c: Tensor, g_sign_hw: Tensor, g_dsum: Tensor, w_s: Tensor, g_ls: Tensor,
            g_ctx_s: Tensor, p_s: Tensor, g_lt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """dS (N, C, HW) from ``(N, C, 1)`` and ``(N, 1, HW)`` coefficients (``w_s`` (C, 1)), and
    the per-image conv_mask weight gradients ``sum_hw g_l F`` (N, C) of S and T."""
    grad = ((S3 - T3) * (two_q2 + two_q1 * weight)
            + torch.sign(S3) * (g_sign_c + g_sign_hw)
            + g_dsum + w_s * g_ls + g_ctx_s * p_s)
    return grad, (S3 * g_ls).sum(2), (T3 * g_lt).sum(2)


def _context_weights(ls: Tensor, lt: Tensor, loss: 'FGDLoss') -> tuple[Tensor, Tensor]:
    """The GcBlocks' spatial softmax weights ``p_s, p_t`` (N, HW) from their logits (no bias)."""
    dtype = ls.dtype
    return (F.softmax(ls + loss.conv_mask_s.bias.to(dtype), dim=1),
            F.softmax(lt + loss.conv_mask_t.bias.to(dtype), dim=1))


def _blocked_forward(S3: Tensor, T3: Tensor, pix_weight: Tensor, loss: 'FGDLoss', w_s: Tensor,
                     w_t: Tensor) -> tuple[Tensor, ...]:
    """The forward reductions of ``_FGDFunction`` in 4 eager passes, block by block on the CPU."""
    n, c, hw = S3.shape
    dtype, device = S3.dtype, S3.device
    ones = torch.ones(1, 1, c, dtype=dtype, device=device).expand(n, 1, c)
    zeros = functools.partial(torch.zeros, dtype=dtype, device=device)
    at_c, at_hw, lt = zeros(n, c), zeros(n, 1, hw), zeros(n, 1, hw)
    as_c, as_hw, ls = zeros(n, c), zeros(n, 1, hw), zeros(n, 1, hw)
    q1, q2, dsum = zeros(n, c), zeros(n, c), zeros(n, c)

    # teacher: attention sums and GcBlock logits
    for i, j in _blocks(n, c, hw, device):
        _stats(T3[i, j], at_c[i, j], at_hw[i], lt[i], w_t[i, :, j], ones[i, :, j])
    at_hw, lt = at_hw[:, 0], lt[:, 0]
    spatial_t = hw * F.softmax(at_hw / (c * loss.temp), dim=1)
    channel_t = c * F.softmax(at_c / (hw * loss.temp), dim=1)
    weight = spatial_t * pix_weight  # (N, HW)

    # student and difference
    for i, j in _blocks(n, c, hw, device):
        s, t = S3[i, j], T3[i, j]
        diff = _stats(s, as_c[i, j], as_hw[i], ls[i], w_s[i, :, j], ones[i, :, j])
        torch.sub(s, t, out=diff)
        torch.sum(diff, 2, out=dsum[i, j])
        diff.square_()
        _rowdot(diff, weight[i], out=q1[i, j])
        torch.sum(diff, 2, out=q2[i, j])
    as_hw, ls = as_hw[:, 0], ls[:, 0]

    # GcBlock contexts
    p_s, p_t = _context_weights(ls, lt, loss)
    ctx_s = _rowdot(S3, p_s)
    ctx_t = _rowdot(T3, p_t)

    return spatial_t, channel_t, weight, p_s, p_t, as_c, as_hw, q1, q2, dsum, ctx_s, ctx_t


def _blocked_grad_S(S3: Tensor, T3: Tensor, g_q1: Tensor, g_q2: Tensor, weight: Tensor,
                    g_as_c: Tensor, g_as_hw: Tensor, g_dsum: Tensor, w_s: Tensor, g_ls: Tensor,
                    g_ctx_s: Tensor, p_s: Tensor) -> Tensor:
    """dS of ``_FGDFunction`` (N, C, HW) in one eager pass, block by block on the CPU."""
    n, c, hw = S3.shape
    left = torch.stack([g_dsum, w_s.expand(n, c), g_ctx_s], dim=2)  # (N, C, 3)
    right = torch.stack([torch.ones_like(g_ls), g_ls, p_s], dim=1)  # (N, 3, HW)
    two_q1, two_q2 = (2 * g_q1)[..., None], (2 * g_q2)[..., None]
    g_as_c, g_as_hw, weight = g_as_c[..., None], g_as_hw[:, None], weight[:, None]
    grad_S = torch.empty_like(S3)
    for i, j in _blocks(n, c, hw, S3.device):
        s, g = S3[i, j], grad_S[i, j]
        torch.sub(s, T3[i, j], out=g)
        scale = torch.baddbmm(two_q2[i, j], two_q1[i, j], weight[i])
        g.mul_(scale)
        sign = torch.sign(s, out=scale)
        g.addcmul_(sign, g_as_c[i, j])
        g.addcmul_(sign, g_as_hw[i])
        g.baddbmm_(left[i, j], right[i])
    return grad_S


class _FGDFunction(torch.autograd.Function):
    """The FGD loss of one level with a hand-written backward.

    The loss only needs a few reductions of the big ``(N, C, HW)`` maps ``S`` and ``T``:

    * ``sum_hw |F|`` (N, C) and ``sum_c |F|`` (N, HW) of both (attentions, mask loss),
    * the GcBlock logits ``w . F`` (N, HW) and contexts ``F @ softmax(logits)`` (N, C) of both,
    * with ``d = S - T``: ``Q1 = sum_hw d^2 P`` (P = ``S_t * (alpha M_fg + beta M_bg)``),
      ``Q2 = sum_hw d^2`` and ``D = sum_hw d`` (N, C), since
      ``focal = sum(C_t * Q1) / N`` and, with the GcBlock difference ``a = add_s - add_t``
      (N, C), ``rela = sum((d + a)^2) / N = (sum Q2 + 2 sum(a D) + HW sum a^2) / N``.

    The forward computes them in 4 passes over memory (teacher stats, teacher context, student
    and difference stats, student context), on the CPU block by block so that the temporaries
    stay in cache; everything after that is on (N, C) and (N, HW) tensors. The backward gets the
    gradients of those small tensors from autograd on the small graph, then the gradient of
    ``S`` in one blocked pass::

        dS = 2 d (g_Q2 + g_Q1 P) + sign(S) (g_Ac + g_As) + g_D + w_s g_ls + g_ctx p_s

    (plus a pass over ``S`` and ``T`` before it for the gradients of the contexts' softmax
    weights, and one after it for the ``conv_mask`` weights); the channel-add parameters get
    theirs from the small graph. ``rela`` is exact in its gradient; its value, summed from the
    expansion above, loses digits only when ``a`` nearly cancels ``d`` in every channel. On CUDA
    each pass is one set of whole-tensor ops. ``params`` are the module's parameters that the
    backward returns gradients for (see ``FGDLoss._params``). Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, S: Tensor, T: Tensor, pix_weight: Tensor, loss: 'FGDLoss',
                *params: Tensor) -> Tensor:
        n, c, h, w = S.shape
        hw = h * w
        dtype = S.dtype
        S3 = S.reshape(n, c, hw)
        T3 = T.reshape(n, c, hw)
        w_s = loss.conv_mask_s.weight.reshape(1, 1, c).to(dtype).expand(n, 1, c)
        w_t = loss.conv_mask_t.weight.reshape(1, 1, c).to(dtype).expand(n, 1, c)
        if loss.compiled:
            as_hw, at_hw, ls, lt = _column_stats(S3, T3, w_s[0].reshape(c, 1), w_t[0].reshape(c, 1),
                                                 compiled=True)
            spatial_t = hw * F.softmax(at_hw / (c * loss.temp), dim=1)
            weight = spatial_t * pix_weight  # (N, HW)
            p_s, p_t = _context_weights(ls, lt, loss)
            as_c, at_c, dsum, q2, q1, ctx_s, ctx_t = _row_stats(
                S3, T3, weight[:, None], p_s[:, None], p_t[:, None],
                torch.ones_like(weight[:, None]), compiled=True)
            channel_t = c * F.softmax(at_c / (hw * loss.temp), dim=1)
        else:
            spatial_t, channel_t, weight, p_s, p_t, as_c, as_hw, q1, q2, dsum, ctx_s, ctx_t = (
                _blocked_forward(S3, T3, pix_weight, loss, w_s, w_t))
        small = (as_c, as_hw, q1, q2, dsum, ctx_s, ctx_t)
        out = loss._small_loss(spatial_t, channel_t, *small)
        ctx.loss = loss
        ctx.save_for_backward(S, T, weight, spatial_t, channel_t, p_s, p_t, *small)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        loss = ctx.loss
        S, T, weight, spatial_t, channel_t, p_s, p_t, *small = ctx.saved_tensors
        n, c, h, w = S.shape
        hw = h * w
        dtype = S.dtype
        S3 = S.reshape(n, c, hw)
        T3 = T.reshape(n, c, hw)
        add_params = [p for p in (*loss.channel_add_conv_s.parameters(),
                                  *loss.channel_add_conv_t.parameters()) if p.requires_grad]

        # gradients of the small tensors (and of the GcBlock channel-add parameters)
        leaves = [x.detach().requires_grad_() for x in small]
        with torch.enable_grad():
            out = loss._small_loss(spatial_t, channel_t, *leaves)
            grads = torch.autograd.grad(out, leaves + add_params, grad_out, allow_unused=True)
        g_as_c, g_as_hw, g_q1, g_q2, g_dsum, g_ctx_s, g_ctx_t = (
            torch.zeros_like(x) if g is None else g for x, g in zip(small, grads[:7]))
        add_grads = dict(zip(map(id, add_params), grads[7:]))

        # through the softmax weights of the contexts (one pass over S and T), then the logits
        if loss.compiled:
            g_p_s, g_p_t = _column_grads(S3, T3, g_ctx_s[..., None], g_ctx_t[..., None],
                                         compiled=True)
        else:
            g_p_s = torch.bmm(g_ctx_s[:, None, :], S3)[:, 0]
            g_p_t = torch.bmm(g_ctx_t[:, None, :], T3)[:, 0]
        g_ls = p_s * (g_p_s - (p_s * g_p_s).sum(1, keepdim=True))
        g_lt = p_t * (g_p_t - (p_t * g_p_t).sum(1, keepdim=True))

        # dS: 2 d (g_q2 + g_q1 P) + sign(S) (g_as_c + g_as_hw) + g_dsum + w_s g_ls + g_ctx p_s
        # and the conv_mask weight gradients sum_hw g_l F (compiled: in the same pass)
        grad_S = rows_s = rows_t = None
        w_s = loss.conv_mask_s.weight.reshape(c).to(dtype)
        if loss.compiled:
            grad_S, rows_s, rows_t = _grad_S(
                S3, T3, (2 * g_q2)[..., None], (2 * g_q1)[..., None], weight[:, None],
                g_as_c[..., None], g_as_hw[:, None], g_dsum[..., None], w_s[:, None],
                g_ls[:, None], g_ctx_s[..., None], p_s[:, None], g_lt[:, None], compiled=True)
            grad_S = grad_S.reshape(S.shape)
        elif ctx.needs_input_grad[0]:
            grad_S = _blocked_grad_S(S3, T3, g_q1, g_q2, weight, g_as_c, g_as_hw, g_dsum, w_s,
                                     g_ls, g_ctx_s, p_s).reshape(S.shape)
        if rows_s is None:
            rows_s, rows_t = _rowdot(S3, g_ls), _rowdot(T3, g_lt)

        def as_param(g: Tensor, p: Tensor) -> Tensor | None:
            return g.reshape(p.shape).to(p.dtype) if p.requires_grad else None

        # conv_mask weights: sum_hw g_l F, biases: sum g_l
        m_s, m_t = loss.conv_mask_s, loss.conv_mask_t
        param_grads = [as_param(rows_s.sum(0), m_s.weight), as_param(g_ls.sum(), m_s.bias),
                       as_param(rows_t.sum(0), m_t.weight), as_param(g_lt.sum(), m_t.bias)]
        param_grads += [add_grads.get(id(p)) if p.requires_grad else None
                        for p in (*loss.channel_add_conv_s.parameters(),
                                  *loss.channel_add_conv_t.parameters())]
        return (grad_S, None, None, None, *param_grads)


@DISTILL_LOSSES.register_module()
class FGDLoss(DistillLoss):
    """Focal and Global Distillation loss for one feature level.

    Yang, Zhendong; Li, Zhe; Jiang, Xiaohu; Gong, Yuan; Yuan, Zehuan; Zhao, Danpei; Yuan,
    Chun. "Focal and Global Knowledge Distillation for Detectors", CVPR 2022.
    Official code: https://github.com/yzd-v/FGD (``FeatureLoss``).

    With the student ``S`` aligned to the teacher's channels (1x1 conv when they differ),
    teacher ``T``, spatial/channel attentions ``S_t, C_t`` of the teacher (and ``S_s, C_s``
    of the student), and foreground/background masks from the gt boxes::

        focal = sum((S - T)^2 * S_t * C_t * (alpha_fgd * Mask_fg + beta_fgd * Mask_bg)) / N
        mask  = sum|C_s - C_t| / N + sum|S_s - S_t| / N
        rela  = sum(((S + add_s(ctx_s(S))) - (T + add_t(ctx_t(T))))^2) / N
        loss  = focal + gamma_fgd * mask + lambda_fgd * rela

    ``focal`` equals ``alpha_fgd * fg_loss + beta_fgd * bg_loss`` of the official code
    (``(S*sqrt(S_t C_t) - T*sqrt(S_t C_t))^2 = (S - T)^2 S_t C_t``) in one pass. ``ctx``/``add``
    are the two GcBlocks (``conv_mask_*``: C->1 + spatial softmax pooling;
    ``channel_add_conv_*``: 1x1 C->C/2, LayerNorm, ReLU, 1x1 C/2->C, last conv zero-init).

    Boxes are mapped to the grid with the padded batch input shape ``img_shape``; the official
    code uses each image's unpadded ``img_shape`` (identical when an image is not padded).
    Half-precision inputs are computed in float32.

    Args:
        student_channels (int): Channels Cs of the student's feature map.
        teacher_channels (int): Channels Ct of the teacher's feature map.
        temp (float): Attention temperature. Defaults to 0.5.
        alpha_fgd (float): Weight of the foreground loss. Defaults to 0.001.
        beta_fgd (float): Weight of the background loss. Defaults to 0.0005.
        gamma_fgd (float): Weight of the attention (mask) loss. Defaults to 0.001.
        lambda_fgd (float): Weight of the global relation loss. Defaults to 0.000005.
        normalize (str | None): ``'pixel'`` standardises the feature vector of every location
            of both maps over its channels (mean 0, variance 1; after the align conv) before the
            loss, the normalisation yzd-v/FGD#72 advises when the student's feature scale is
            far from the teacher's. Not part of the paper; default None (off).
        compiled (bool): run the passes over the maps as compiled kernels (see
            :mod:`mmdistill.losses.compiled`): the same values, two fused passes forward and two
            backward, compiled once on first use; the eager form where compiling is not
            possible. Default False (the blocked eager passes).
    """

    extra_inputs: tuple[str, ...] = ('gt_bboxes', 'img_shape')
    channel_args = ('student_channels', 'teacher_channels')

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 temp: float = 0.5,
                 alpha_fgd: float = 0.001,
                 beta_fgd: float = 0.0005,
                 gamma_fgd: float = 0.001,
                 lambda_fgd: float = 0.000005,
                 normalize: str | None = None,
                 compiled: bool = False) -> None:
        super().__init__()
        self.compiled = compiled
        if normalize not in (None, 'pixel'):
            raise ValueError(f"FGDLoss: normalize must be None or 'pixel', got {normalize!r}")
        self.normalize = normalize
        self.temp = temp
        self.alpha_fgd = alpha_fgd
        self.beta_fgd = beta_fgd
        self.gamma_fgd = gamma_fgd
        self.lambda_fgd = lambda_fgd

        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        else:
            self.align = None

        c = teacher_channels
        self.conv_mask_s = nn.Conv2d(c, 1, kernel_size=1)
        self.conv_mask_t = nn.Conv2d(c, 1, kernel_size=1)
        self.channel_add_conv_s = self._channel_add(c)
        self.channel_add_conv_t = self._channel_add(c)
        self.reset_parameters()

    @staticmethod
    def _channel_add(c: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c, c // 2, kernel_size=1),
            nn.LayerNorm([c // 2, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, kernel_size=1))

    def reset_parameters(self) -> None:
        """Official init: kaiming (fan_in) ``conv_mask_*``, zero last conv of the adds."""
        _kaiming_fan_in(self.conv_mask_s)
        _kaiming_fan_in(self.conv_mask_t)
        _last_zero_init(self.channel_add_conv_s)
        _last_zero_init(self.channel_add_conv_t)

    def _params(self) -> tuple[Tensor, ...]:
        """The parameters the loss core sees, in the order ``_FGDFunction`` returns gradients."""
        return (self.conv_mask_s.weight, self.conv_mask_s.bias, self.conv_mask_t.weight,
                self.conv_mask_t.bias, *self.channel_add_conv_s.parameters(),
                *self.channel_add_conv_t.parameters())

    def _small_loss(self, spatial_t: Tensor, channel_t: Tensor, as_c: Tensor, as_hw: Tensor,
                    q1: Tensor, q2: Tensor, dsum: Tensor, ctx_s: Tensor, ctx_t: Tensor) -> Tensor:
        """The loss from the reductions of the feature maps (see ``_FGDFunction``)."""
        n, c = as_c.shape
        hw = as_hw.shape[1]
        dtype = as_c.dtype
        spatial_s = hw * F.softmax(as_hw / (c * self.temp), dim=1)
        channel_s = c * F.softmax(as_c / (hw * self.temp), dim=1)
        focal = (channel_t * q1).sum() / n
        mask_loss = ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n
        add_s = _apply(self.channel_add_conv_s, ctx_s.reshape(n, c, 1, 1), dtype).reshape(n, c)
        add_t = _apply(self.channel_add_conv_t, ctx_t.reshape(n, c, 1, 1), dtype).reshape(n, c)
        add = add_s - add_t
        rela = (q2.sum() + 2 * (add * dsum).sum() + hw * add.square().sum()) / n
        return focal + self.gamma_fgd * mask_loss + self.lambda_fgd * rela

    def forward(self, preds_S: Tensor, preds_T: Tensor, gt_bboxes: Sequence[Tensor],
                img_shape: Sequence[int]) -> Tensor:
        """Compute the FGD loss of one level.

        Args:
            preds_S (Tensor): (N, Cs, H, W) student feature map.
            preds_T (Tensor): (N, Ct, H, W) teacher feature map (no gradient is taken).
            gt_bboxes (Sequence[Tensor]): N tensors (n_i, 4), xyxy in input pixels.
            img_shape (Sequence[int]): (img_h, img_w) of the padded batch input.

        Returns:
            Tensor: scalar loss (float32 for half-precision inputs).
        """
        assert preds_S.shape[-2:] == preds_T.shape[-2:], \
            f'student {tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)} ' \
            'feature maps differ in size'
        dtype = torch.float32 if preds_S.dtype in HALF else preds_S.dtype
        with torch.autocast(preds_S.device.type, enabled=False):
            preds_T = preds_T.detach().to(dtype).contiguous()
            if self.align is not None:
                preds_S = _apply(self.align, preds_S, dtype)
            else:
                preds_S = preds_S.to(dtype)
            if self.normalize == 'pixel':
                preds_S, preds_T = pixel_standardise(preds_S), pixel_standardise(preds_T)
            preds_S = preds_S.contiguous()
            n, c, h, w = preds_S.shape
            mask_fg, mask_bg = fgd_masks(gt_bboxes, img_shape, h, w, dtype, preds_S.device)
            pix_weight = (self.alpha_fgd * mask_fg + self.beta_fgd * mask_bg).reshape(n, h * w)
            return _FGDFunction.apply(preds_S, preds_T, pix_weight, self, *self._params())

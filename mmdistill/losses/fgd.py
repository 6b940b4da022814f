"""FGD: Focal and Global Knowledge Distillation for Detectors.

Yang et al., "Focal and Global Knowledge Distillation for Detectors", CVPR 2022.
Official code: https://github.com/yzd-v/FGD (``mmdet/distillation/losses/fgd.py``).

This file states the loss as the paper defines it (:meth:`FGDLoss.loss_by_definition`); the
loss is computed by its fast form, :mod:`mmdistill.losses.fast.fgd` (the same function from a
few reductions of the maps, tested against the definition in float64).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.fast import fgd_kernel
from mmdistill.losses.fast.fgd import fgd_loss_fast
from mmdistill.losses.utils import HALF
from mmdistill.registry import DISTILL_LOSSES


def attention(feat: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """The paper's spatial and channel attention of a feature map ``F`` (N, C, H, W).

    ``A^S = H*W * softmax_hw(mean_c |F| / temp)``, ``A^C = C * softmax_c(mean_hw |F| / temp)``.

    Returns:
        tuple[Tensor, Tensor]: spatial attention (N, H, W) and channel attention (N, C).
    """
    n, c, h, w = feat.shape
    value = feat.abs()
    spatial = (h * w) * F.softmax(value.mean(dim=1).reshape(n, h * w) / temp, dim=1)
    channel = c * F.softmax(value.mean(dim=(2, 3)) / temp, dim=1)
    return spatial.reshape(n, h, w), channel


def global_context(feat: Tensor, conv_mask: nn.Conv2d) -> Tensor:
    """GcBlock context of ``F`` (N, C, H, W): ``sum_j softmax_j(W_k F)_j F_j`` (N, C), with
    ``W_k`` the 1x1 C->1 ``conv_mask`` (its parameters cast to the dtype of ``feat``)."""
    n, c, h, w = feat.shape
    logits = F.conv2d(feat, conv_mask.weight.to(feat.dtype), conv_mask.bias.to(feat.dtype))
    weights = F.softmax(logits.reshape(n, h * w), dim=1)
    return torch.bmm(feat.reshape(n, c, h * w), weights[:, :, None])[:, :, 0]


def pixel_standardise(feat: Tensor, eps: float = 1e-5) -> Tensor:
    """Standardise the channel vector of every location of ``feat`` (N, C, H, W): mean 0,
    (biased) variance 1 over C, as a LayerNorm over channels without affine parameters."""
    mean = feat.mean(dim=1, keepdim=True)
    var = feat.var(dim=1, unbiased=False, keepdim=True)
    return (feat - mean) * torch.rsqrt(var + eps)


def box_cells(gt_bboxes: Sequence[Tensor], img_shape: Sequence[int], height: int, width: int,
              dtype: torch.dtype, device: torch.device) -> tuple[list[int], Tensor, Tensor]:
    """The grid cells of FGD's gt boxes: each box (input pixels ``x1, y1, x2, y2``) mapped to
    the ``height x width`` grid with ``wmin = floor(x1 / img_w * W)``, ``wmax = ceil(x2 / img_w
    * W)`` (same for h), as the official code does.

    Returns:
        tuple[list[int], Tensor, Tensor]: the number of boxes of each image, the boxes' ranges
        ``wmin, hmin, wmax, hmax`` (B, 4) (float, not clipped to the grid) and the value their
        cells get, ``1 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))`` (B,) in ``dtype``.
    """
    boxes = [getattr(b, 'tensor', b).reshape(-1, 4) for b in gt_bboxes]
    counts = [b.shape[0] for b in boxes]
    boxes = torch.cat(boxes).to(device)
    if not boxes.is_floating_point():
        boxes = boxes.float()
    img_h, img_w = float(img_shape[0]), float(img_shape[1])
    # Same operation order as the official code (divide, then multiply) so that floor/ceil
    # agree on values that land exactly on a cell edge.
    size = boxes.new_tensor([img_w, img_h])
    grid = boxes.new_tensor([width, height])
    low = torch.floor(boxes[:, :2] / size * grid)
    high = torch.ceil(boxes[:, 2:] / size * grid)
    value = 1.0 / (high + 1 - low).prod(dim=1).to(dtype)  # (B,)
    return counts, torch.cat([low, high], dim=1), value


def fgd_masks(gt_bboxes: Sequence[Tensor], img_shape: Sequence[int], height: int, width: int,
              dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Foreground and background masks of FGD, built for the whole batch at once.

    The cells ``[hmin, hmax] x [wmin, wmax]`` of each box (:func:`box_cells`; inclusive,
    clipped to the grid) get ``1 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))`` (area of the
    unclipped range); where boxes overlap the largest value is kept. The background mask is 1
    where the foreground mask is 0, divided by its per-image sum when that is positive.

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
    counts, bounds, area = box_cells(gt_bboxes, img_shape, height, width, dtype, device)
    img_idx = torch.repeat_interleave(torch.arange(num_imgs, device=device),
                                      torch.tensor(counts, device=device))
    wmin, hmin, wmax, hmax = bounds.unbind(1)
    ys = torch.arange(height, device=device, dtype=hmin.dtype)
    xs = torch.arange(width, device=device, dtype=wmin.dtype)
    rows = (ys >= hmin[:, None]) & (ys <= hmax[:, None])  # (B, H)
    cols = (xs >= wmin[:, None]) & (xs <= wmax[:, None])  # (B, W)
    # area inside the box, 0 outside: one product of (B, H) and (B, W) factors
    per_box = (rows * area[:, None])[:, :, None] * cols[:, None, :].to(dtype)  # (B, H, W)
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


def run_in_param_dtype(module: nn.Module, x: Tensor, out_dtype: torch.dtype) -> Tensor:
    """``module(x)`` run in the dtype of the module's parameters, returned as ``out_dtype``."""
    param_dtype = next(module.parameters()).dtype
    return module(x.to(param_dtype)).to(out_dtype)


def _channel_add_on_vectors(block: nn.Sequential, x: Tensor) -> Tensor:
    """``block`` (:meth:`FGDLoss._channel_add`: 1x1 conv, LayerNorm, ReLU, 1x1 conv) on (N, C)
    vectors, i.e. on (N, C, 1, 1) maps, as linear maps: the same function without the cost of
    convolutions on 1x1 maps. Computed in the block's dtype, returned in ``x``'s."""
    conv_in, norm, _, conv_out = block
    dtype = x.dtype
    h = F.linear(x.to(conv_in.weight.dtype), conv_in.weight.flatten(1), conv_in.bias)
    h = F.layer_norm(h, h.shape[1:], norm.weight.flatten(), norm.bias.flatten(), norm.eps)
    return F.linear(F.relu(h), conv_out.weight.flatten(1), conv_out.bias).to(dtype)


@DISTILL_LOSSES.register_module()
class FGDLoss(DistillLoss):
    """Focal and Global Distillation loss for one feature level.

    Yang, Zhendong; Li, Zhe; Jiang, Xiaohu; Gong, Yuan; Yuan, Zehuan; Zhao, Danpei; Yuan,
    Chun. "Focal and Global Knowledge Distillation for Detectors", CVPR 2022.
    Official code: https://github.com/yzd-v/FGD (``FeatureLoss``).

    With the student ``S`` aligned to the teacher's channels (1x1 conv when they differ),
    teacher ``T``, spatial/channel attentions ``A^S_t, A^C_t`` of the teacher (``A^S_s, A^C_s``
    of the student, :func:`attention`) and foreground/background masks ``M_fg, M_bg`` from the
    gt boxes (:func:`fgd_masks`), summed over all elements and divided by the batch size N::

        L_fg     = sum(M_fg A^S_t A^C_t (S - T)^2) / N       (focal: feature loss,
        L_bg     = sum(M_bg A^S_t A^C_t (S - T)^2) / N        foreground and background)
        L_at     = (sum|A^S_s - A^S_t| + sum|A^C_s - A^C_t|) / N      (focal: attention loss)
        L_global = sum((R_s(S) - R_t(T))^2) / N,   R(F) = F + add(context(F))
        loss     = alpha_fgd L_fg + beta_fgd L_bg + gamma_fgd L_at + lambda_fgd L_global

    ``context``/``add`` are the two GcBlocks (``conv_mask_*``: C->1 + spatial softmax pooling,
    :func:`global_context`; ``channel_add_conv_*``: 1x1 C->C/2, LayerNorm, ReLU, 1x1 C/2->C,
    last conv zero-init).

    Boxes are mapped to the grid with the padded batch input shape ``img_shape``; the official
    code uses each image's unpadded ``img_shape`` (identical when an image is not padded).
    Half-precision inputs are computed in float32.

    The loss is computed by the fast form (:func:`~mmdistill.losses.fast.fgd.fgd_loss_fast`)
    unless ``fast_form`` is False (then :meth:`loss_by_definition`, through autograd).

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
        compiled (bool): the fast form runs its passes over the maps as compiled kernels (see
            :mod:`mmdistill.losses.fast.fgd_compiled`): the same values, two fused passes
            forward and two backward, compiled once on first use; the eager form where
            compiling is not possible. Default False (the blocked eager passes). Where the CPU
            kernel runs, it runs instead.
        cpu_kernel (bool): on the CPU (float32 and float64 maps) the loss and all its
            gradients are one hand-tiled kernel (:mod:`mmdistill.losses.fast.fgd_kernel`),
            compiled for the machine on first use: each map read from memory twice, both times
            in the forward (the gradients are computed with the loss and kept for the
            backward). Default True; where no C++ compiler builds it, the eager (or compiled)
            passes run, said once in the log.
    """

    extra_inputs: tuple[str, ...] = ('gt_bboxes', 'img_shape')
    channel_args = ('student_channels', 'teacher_channels')
    #: compute the loss with :func:`~mmdistill.losses.fast.fgd.fgd_loss_fast` (False: the
    #: definition, :meth:`loss_by_definition`)
    fast_form: ClassVar[bool] = True

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 temp: float = 0.5,
                 alpha_fgd: float = 0.001,
                 beta_fgd: float = 0.0005,
                 gamma_fgd: float = 0.001,
                 lambda_fgd: float = 0.000005,
                 normalize: str | None = None,
                 compiled: bool = False,
                 cpu_kernel: bool = True) -> None:
        super().__init__()
        self.compiled = compiled
        self.cpu_kernel = cpu_kernel
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

    def channel_adds(self, ctx_s: Tensor, ctx_t: Tensor) -> tuple[Tensor, Tensor]:
        """The GcBlocks' channel transforms ``add_s(ctx_s), add_t(ctx_t)``: (N, C) each, from
        the (N, C) contexts, computed in the parameters' dtype, returned in the contexts'."""
        return (_channel_add_on_vectors(self.channel_add_conv_s, ctx_s),
                _channel_add_on_vectors(self.channel_add_conv_t, ctx_t))

    def loss_by_definition(self, S: Tensor, T: Tensor, mask_fg: Tensor,
                           mask_bg: Tensor) -> Tensor:
        """The paper's loss (see the class docstring), term by term.

        Args:
            S (Tensor): (N, C, H, W) student map, aligned to the teacher's channels.
            T (Tensor): (N, C, H, W) teacher map, same dtype.
            mask_fg (Tensor): (N, H, W) foreground mask (:func:`fgd_masks`).
            mask_bg (Tensor): (N, H, W) background mask.

        Returns:
            Tensor: scalar loss.
        """
        n = S.shape[0]
        spatial_t, channel_t = attention(T, self.temp)
        spatial_s, channel_s = attention(S, self.temp)
        # focal distillation: the feature loss, weighted by the teacher's attentions ...
        weighted_sq = (S - T).square() * spatial_t[:, None] * channel_t[:, :, None, None]
        loss_fg = (weighted_sq * mask_fg[:, None]).sum() / n
        loss_bg = (weighted_sq * mask_bg[:, None]).sum() / n
        # ... and the attention loss
        loss_at = ((spatial_s - spatial_t).abs().sum() + (channel_s - channel_t).abs().sum()) / n
        # global distillation: the GcBlock relations R(F) = F + add(context(F))
        add_s, add_t = self.channel_adds(global_context(S, self.conv_mask_s),
                                         global_context(T, self.conv_mask_t))
        relation_s = S + add_s[:, :, None, None]
        relation_t = T + add_t[:, :, None, None]
        loss_global = (relation_s - relation_t).square().sum() / n
        return (self.alpha_fgd * loss_fg + self.beta_fgd * loss_bg + self.gamma_fgd * loss_at
                + self.lambda_fgd * loss_global)

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
                preds_S = run_in_param_dtype(self.align, preds_S, dtype)
            else:
                preds_S = preds_S.to(dtype)
            if self.normalize == 'pixel':
                preds_S, preds_T = pixel_standardise(preds_S), pixel_standardise(preds_T)
            preds_S = preds_S.contiguous()
            n, c, h, w = preds_S.shape
            if not self.fast_form:
                mask_fg, mask_bg = fgd_masks(gt_bboxes, img_shape, h, w, dtype, preds_S.device)
                return self.loss_by_definition(preds_S, preds_T, mask_fg, mask_bg)
            pix_weight = self.pixel_weights(gt_bboxes, img_shape, preds_S)
            return fgd_loss_fast(preds_S, preds_T, pix_weight, self, compiled=self.compiled,
                                 cpu_kernel=self.cpu_kernel)

    def pixel_weights(self, gt_bboxes: Sequence[Tensor], img_shape: Sequence[int],
                      feat: Tensor) -> Tensor:
        """``alpha_fgd M_fg + beta_fgd M_bg`` (N, H*W) on the grid of ``feat`` (N, C, H, W), in
        its dtype and device (:func:`fgd_masks`; where the CPU kernel runs, painted by it)."""
        n, _, h, w = feat.shape
        if self.cpu_kernel and fgd_kernel.available(feat):
            cells = box_cells(gt_bboxes, img_shape, h, w, feat.dtype, feat.device)
            return fgd_kernel.pixel_weights(*cells, h, w, self.alpha_fgd, self.beta_fgd)
        mask_fg, mask_bg = fgd_masks(gt_bboxes, img_shape, h, w, feat.dtype, feat.device)
        return (self.alpha_fgd * mask_fg + self.beta_fgd * mask_bg).reshape(n, h * w)

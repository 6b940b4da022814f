"""FGD: Focal and Global Knowledge Distillation for Detectors.

Yang et al., "Focal and Global Knowledge Distillation for Detectors", CVPR 2022.
Official code: https://github.com/yzd-v/FGD (``mmdet/distillation/losses/fgd.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdistill.registry import DISTILL_LOSSES

_HALF = (torch.float16, torch.bfloat16)


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


@DISTILL_LOSSES.register_module()
class FGDLoss(nn.Module):
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
                 lambda_fgd: float = 0.000005) -> None:
        super().__init__()
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

    def _context_add(self, feat: Tensor, conv_mask: nn.Conv2d,
                     channel_add: nn.Sequential) -> Tensor:
        """GcBlock term: ``channel_add(sum_hw softmax_hw(conv_mask(F)) * F)``, (N, C)."""
        n, c, h, w = feat.shape
        weight = _apply(conv_mask, feat, feat.dtype).reshape(n, h * w)
        weight = F.softmax(weight, dim=1)
        context = torch.bmm(feat.reshape(n, c, h * w), weight[:, :, None])  # (N, C, 1)
        add = _apply(channel_add, context.reshape(n, c, 1, 1), feat.dtype)
        return add.reshape(n, c)

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
        dtype = torch.float32 if preds_S.dtype in _HALF else preds_S.dtype
        preds_T = preds_T.detach().to(dtype)
        if self.align is not None:
            preds_S = _apply(self.align, preds_S, dtype)
        else:
            preds_S = preds_S.to(dtype)
        n, c, h, w = preds_S.shape

        spatial_t, channel_t = fgd_attention(preds_T, self.temp)
        spatial_s, channel_s = fgd_attention(preds_S, self.temp)
        mask_fg, mask_bg = fgd_masks(gt_bboxes, img_shape, h, w, dtype, preds_S.device)

        # Focal: alpha * fg_loss + beta * bg_loss in one pass.
        diff = preds_S - preds_T
        pix_weight = spatial_t * (self.alpha_fgd * mask_fg + self.beta_fgd * mask_bg)
        focal = (diff.square() * channel_t[:, :, None, None] * pix_weight[:, None]).sum() / n

        # Attention loss.
        mask_loss = ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n

        # Global relation loss.
        add_s = self._context_add(preds_S, self.conv_mask_s, self.channel_add_conv_s)
        add_t = self._context_add(preds_T, self.conv_mask_t, self.channel_add_conv_t)
        rela = (diff + (add_s - add_t)[:, :, None, None]).square().sum() / n

        return focal + self.gamma_fgd * mask_loss + self.lambda_fgd * rela

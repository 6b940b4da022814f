"""Official-form reference of FGD (Yang et al., CVPR 2022; yzd-v/FGD)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RefFGD(nn.Module):
    """yzd-v/FGD ``FeatureLoss`` (mmdet/distillation/losses/fgd.py), per image and per box,
    with the official layer names (loads an ``FGDLoss`` state dict). One difference: a box
    starting left of or above the image is clipped at 0 (the official slice would wrap)."""

    def __init__(self, student_channels, teacher_channels, temp=0.5, alpha_fgd=0.001,
                 beta_fgd=0.0005, gamma_fgd=0.001, lambda_fgd=0.000005):
        super().__init__()
        self.temp = temp
        self.alpha_fgd = alpha_fgd
        self.beta_fgd = beta_fgd
        self.gamma_fgd = gamma_fgd
        self.lambda_fgd = lambda_fgd
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, teacher_channels, 1, 1, 0)
        else:
            self.align = None
        c = teacher_channels
        self.conv_mask_s = nn.Conv2d(c, 1, kernel_size=1)
        self.conv_mask_t = nn.Conv2d(c, 1, kernel_size=1)
        self.channel_add_conv_s = nn.Sequential(
            nn.Conv2d(c, c // 2, kernel_size=1), nn.LayerNorm([c // 2, 1, 1]),
            nn.ReLU(inplace=True), nn.Conv2d(c // 2, c, kernel_size=1))
        self.channel_add_conv_t = nn.Sequential(
            nn.Conv2d(c, c // 2, kernel_size=1), nn.LayerNorm([c // 2, 1, 1]),
            nn.ReLU(inplace=True), nn.Conv2d(c // 2, c, kernel_size=1))

    @staticmethod
    def get_attention(preds, temp):
        N, C, H, W = preds.shape
        value = torch.abs(preds)
        fea_map = value.mean(axis=1, keepdim=True)
        S_attention = (H * W * F.softmax((fea_map / temp).view(N, -1), dim=1)).view(N, H, W)
        channel_map = value.mean(axis=2, keepdim=False).mean(axis=2, keepdim=False)
        C_attention = C * F.softmax(channel_map / temp, dim=1)
        return S_attention, C_attention

    @staticmethod
    def get_masks(gt_bboxes, img_shape, N, H, W, dtype, device=None):
        Mask_fg = torch.zeros(N, H, W, dtype=dtype, device=device)
        Mask_bg = torch.ones(N, H, W, dtype=dtype, device=device)
        img_h, img_w = img_shape
        for i in range(N):
            boxes = gt_bboxes[i]
            for j in range(len(boxes)):
                wmin = int(torch.floor(boxes[j, 0] / img_w * W))
                wmax = int(torch.ceil(boxes[j, 2] / img_w * W))
                hmin = int(torch.floor(boxes[j, 1] / img_h * H))
                hmax = int(torch.ceil(boxes[j, 3] / img_h * H))
                area = 1.0 / (hmax + 1 - hmin) / (wmax + 1 - wmin)
                # official: Mask_fg[i][hmin:hmax+1, wmin:wmax+1]; a negative start is clipped
                hs, ws = max(hmin, 0), max(wmin, 0)
                region = Mask_fg[i][hs:hmax + 1, ws:wmax + 1]
                Mask_fg[i][hs:hmax + 1, ws:wmax + 1] = torch.maximum(
                    region, torch.tensor(area, dtype=dtype, device=device))
            Mask_bg[i] = torch.where(Mask_fg[i] > 0, 0, 1)
            if torch.sum(Mask_bg[i]):
                Mask_bg[i] /= torch.sum(Mask_bg[i])
        return Mask_fg, Mask_bg

    @staticmethod
    def get_fea_loss(preds_S, preds_T, Mask_fg, Mask_bg, C_t, S_t):
        mse = nn.MSELoss(reduction='sum')
        Mask_fg = Mask_fg.unsqueeze(1)
        Mask_bg = Mask_bg.unsqueeze(1)
        C_t = C_t.unsqueeze(-1).unsqueeze(-1)
        S_t = S_t.unsqueeze(1)
        fea_t = preds_T * torch.sqrt(S_t) * torch.sqrt(C_t)
        fea_s = preds_S * torch.sqrt(S_t) * torch.sqrt(C_t)
        fg_loss = mse(fea_s * torch.sqrt(Mask_fg), fea_t * torch.sqrt(Mask_fg)) / len(Mask_fg)
        bg_loss = mse(fea_s * torch.sqrt(Mask_bg), fea_t * torch.sqrt(Mask_bg)) / len(Mask_bg)
        return fg_loss, bg_loss

    @staticmethod
    def get_mask_loss(C_s, C_t, S_s, S_t):
        return torch.sum(torch.abs(C_s - C_t)) / len(C_s) + \
            torch.sum(torch.abs(S_s - S_t)) / len(S_s)

    def spatial_pool(self, x, in_type):
        batch, channel, height, width = x.size()
        input_x = x.view(batch, channel, height * width).unsqueeze(1)
        conv = self.conv_mask_s if in_type == 0 else self.conv_mask_t
        context_mask = conv(x).view(batch, 1, height * width)
        context_mask = F.softmax(context_mask, dim=2).unsqueeze(-1)
        context = torch.matmul(input_x, context_mask)
        return context.view(batch, channel, 1, 1)

    def get_rela_loss(self, preds_S, preds_T):
        mse = nn.MSELoss(reduction='sum')
        out_s = preds_S + self.channel_add_conv_s(self.spatial_pool(preds_S, 0))
        out_t = preds_T + self.channel_add_conv_t(self.spatial_pool(preds_T, 1))
        return mse(out_s, out_t) / len(out_s)

    def forward(self, preds_S, preds_T, gt_bboxes, img_shape):
        if self.align is not None:
            preds_S = self.align(preds_S)
        N, C, H, W = preds_S.shape
        S_t, C_t = self.get_attention(preds_T, self.temp)
        S_s, C_s = self.get_attention(preds_S, self.temp)
        Mask_fg, Mask_bg = self.get_masks(gt_bboxes, img_shape, N, H, W, preds_S.dtype,
                                          preds_S.device)
        fg_loss, bg_loss = self.get_fea_loss(preds_S, preds_T, Mask_fg, Mask_bg, C_t, S_t)
        mask_loss = self.get_mask_loss(C_s, C_t, S_s, S_t)
        rela_loss = self.get_rela_loss(preds_S, preds_T)
        return self.alpha_fgd * fg_loss + self.beta_fgd * bg_loss + \
            self.gamma_fgd * mask_loss + self.lambda_fgd * rela_loss

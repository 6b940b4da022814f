"""Official-form reference of FitNet hints (Romero et al., ICLR 2015; mdistiller)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class RefConvReg(nn.Module):
    """mdistiller ``ConvReg``: the regressor is chosen from the two feature shapes."""

    def __init__(self, s_shape, t_shape, use_relu=True):
        super().__init__()
        self.use_relu = use_relu
        s_N, s_C, s_H, s_W = s_shape
        t_N, t_C, t_H, t_W = t_shape
        if s_H == 2 * t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=3, stride=2, padding=1)
        elif s_H * 2 == t_H:
            self.conv = nn.ConvTranspose2d(s_C, t_C, kernel_size=4, stride=2, padding=1)
        elif s_H >= t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=(1 + s_H - t_H, 1 + s_W - t_W))
        else:
            raise ValueError(f'ConvReg: no regressor for {s_shape} -> {t_shape}')
        self.bn = nn.BatchNorm2d(t_C)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.conv(x)
        if self.use_relu:
            return self.relu(self.bn(x))
        return self.bn(x)


def reference_fitnet(conv_reg, f_s, f_t, feat_loss_weight):
    return feat_loss_weight * F.mse_loss(conv_reg(f_s), f_t)

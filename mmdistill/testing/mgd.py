"""Official-form reference of MGD (Yang et al., ECCV 2022; yzd-v/MGD)."""
from __future__ import annotations

import torch
import torch.nn as nn


class RefMGD(nn.Module):
    """yzd-v/MGD ``FeatureLoss`` (det/seg) and ``MGDLoss`` (cls, ``cls=True``), with the official
    layer names (loads an ``MGDLoss`` state dict). The mask is drawn on the features' device
    (the official code draws it on the CPU and copies it): on the CPU the same draw."""

    def __init__(self, student_channels, teacher_channels, alpha_mgd, lambda_mgd, cls=False):
        super().__init__()
        self.alpha_mgd = alpha_mgd
        self.lambda_mgd = lambda_mgd
        self.cls = cls
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, stride=1,
                                   padding=0)
        else:
            self.align = None
        self.generation = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1))

    def forward(self, preds_S, preds_T):
        assert preds_S.shape[-2:] == preds_T.shape[-2:]
        if self.align is not None:
            preds_S = self.align(preds_S)
        return self.get_dis_loss(preds_S, preds_T) * self.alpha_mgd

    def get_dis_loss(self, preds_S, preds_T):
        loss_mse = nn.MSELoss(reduction='sum')
        N, C, H, W = preds_T.shape
        device = preds_S.device
        if self.cls:
            mat = torch.rand((N, C, 1, 1), device=device)
            mat = torch.where(mat < self.lambda_mgd, 0, 1).to(device)
        else:
            mat = torch.rand((N, 1, H, W), device=device)
            mat = torch.where(mat > 1 - self.lambda_mgd, 0, 1).to(device)
        masked_fea = torch.mul(preds_S, mat)
        new_fea = self.generation(masked_fea)
        return loss_mse(new_fea, preds_T) / N

"""Official-form reference of CWD (Shu et al., ICCV 2021; mmrazor ``ChannelWiseDivergence``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_cwd(preds_S, preds_T, tau, loss_weight):
    """mmrazor ``ChannelWiseDivergence.forward``: a spatial softmax per channel, KL, tau^2, / (N*C).

    ``preds_S`` already has the teacher's channels (aligned by the caller when they differ).
    """
    assert preds_S.shape[-2:] == preds_T.shape[-2:]
    N, C, H, W = preds_S.shape
    softmax_pred_T = F.softmax(preds_T.view(-1, W * H) / tau, dim=1)
    logsoftmax = torch.nn.LogSoftmax(dim=1)
    loss = torch.sum(softmax_pred_T * logsoftmax(preds_T.view(-1, W * H) / tau) -
                     softmax_pred_T * logsoftmax(preds_S.view(-1, W * H) / tau)) * (tau**2)
    return loss_weight * loss / (C * N)

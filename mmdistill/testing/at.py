"""Official-form reference of attention transfer (Zagoruyko & Komodakis, ICLR 2017;
mdistiller)."""
from __future__ import annotations

import torch.nn.functional as F


def reference_at(f_s, f_t, p):
    """mdistiller ``single_stage_at_loss`` (square maps: pools to (H, H))."""

    def _at(feat, p):
        return F.normalize(feat.pow(p).mean(1).reshape(feat.size(0), -1))

    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
    return (_at(f_s, p) - _at(f_t, p)).pow(2).mean()

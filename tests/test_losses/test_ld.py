"""LDLoss against mmdet's own ``knowledge_distillation_kl_div_loss`` (as ``LDHead`` calls it:
distributions reshaped to (P*4, reg_max+1), weight per location repeated over the 4 sides,
avg_factor 4) at the locations of FGD's foreground mask; gradients to the student only; clear
errors for taps that are not box distributions."""
import pytest
import torch

from mmdistill.losses import LDLoss
from mmdistill.losses.fgd import fgd_masks
from mmdistill.registry import DISTILL_LOSSES

kd_loss = pytest.importorskip('mmdet.models.losses.kd_loss')

REG_MAX = 16


def boxes(g):
    xy = torch.rand(3, 2, generator=g, dtype=torch.float64) * 40
    return [torch.cat([xy, xy + 8 + 20 * torch.rand(3, 2, generator=g, dtype=torch.float64)], 1),
            torch.zeros(0, 4, dtype=torch.float64),
            torch.tensor([[0., 0., 63., 47.]], dtype=torch.float64)]


def reference(s, t, gt_bboxes, img_shape, weight=0.25, T=10, binary=False):
    """What LDHead computes, with its positives replaced by the cells of FGD's mask."""
    n, c, h, w = s.shape
    mask, _ = fgd_masks(gt_bboxes, img_shape, h, w, s.dtype, s.device)
    if binary:
        mask = (mask > 0).to(s.dtype)
    flat = mask.reshape(-1)
    pos = flat.nonzero().squeeze(1)
    # LDHead: permute(0, 2, 3, 1).reshape(-1, 4 * (reg_max + 1)) -> [pos] -> (-1, reg_max + 1)
    pred = s.permute(0, 2, 3, 1).reshape(-1, c)[pos].reshape(-1, REG_MAX + 1)
    soft = t.permute(0, 2, 3, 1).reshape(-1, c)[pos].reshape(-1, REG_MAX + 1)
    return weight * kd_loss.knowledge_distillation_kl_div_loss(
        pred, soft, weight=flat[pos][:, None].expand(-1, 4).reshape(-1), avg_factor=4.0, T=T)


@pytest.mark.parametrize('area_weight', [True, False])
def test_matches_mmdet_kd_loss_at_the_foreground(area_weight):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 4 * (REG_MAX + 1), 6, 8, generator=g, dtype=torch.float64,
                    requires_grad=True)
    t = 3 * torch.randn(3, 4 * (REG_MAX + 1), 6, 8, generator=g, dtype=torch.float64,
                        requires_grad=True)
    gt, shape = boxes(g), (48, 64)
    loss = DISTILL_LOSSES.build(dict(type='LDLoss', area_weight=area_weight))
    value = 0.25 * loss(s, t, gt, shape)  # the entry's loss_weight of the LD configs
    ref = reference(s, t, gt, shape, binary=not area_weight)
    # mmdet divides by avg_factor + float32 eps
    assert float(value) == pytest.approx(float(ref), rel=1e-6)
    assert float(value) > 0
    value.backward()
    assert t.grad is None and s.grad is not None
    # only the box cells get a gradient: image 1 has no box
    assert s.grad[0].abs().sum() > 0 and s.grad[1].abs().sum() == 0
    assert float(LDLoss()(s, s.detach(), gt, shape)) == pytest.approx(0.0, abs=1e-12)


def test_defaults_are_mmdet_ld_configs():
    from mmengine.config import Config
    loss = LDLoss()
    assert (loss.T, loss.reg_max) == (10.0, 16)
    cfg = Config.fromfile('configs/ld/ld_gfl_r101-fpn_gfl_r18-fpn_1x_coco.py')
    assert [e.loss_weight for e in cfg.model.distill_losses.values()] == [0.25]


def test_half_precision_and_bad_taps():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 20, 4, 4, generator=g)
    gt = [torch.tensor([[0., 0., 16., 16.]]), torch.tensor([[8., 8., 30., 30.]])]
    full = LDLoss(reg_max=4)(s, s.flip(1), gt, (32, 32))
    half = LDLoss(reg_max=4)(s.bfloat16(), s.flip(1).bfloat16(), gt, (32, 32))
    assert half.dtype == torch.float32 and float(half) == pytest.approx(float(full), rel=0.05)
    with pytest.raises(ValueError, match='not a multiple of 4'):
        LDLoss()(torch.randn(1, 18, 4, 4), torch.randn(1, 18, 4, 4), gt[:1], (32, 32))
    with pytest.raises(ValueError, match='set reg_max=4'):
        LDLoss()(s, s, gt, (32, 32))  # 20 channels = 4 x 5 bins, default reg_max 16
    with pytest.raises(ValueError, match='differ in shape'):
        LDLoss(reg_max=4)(s, s[:, :, :2], gt, (32, 32))

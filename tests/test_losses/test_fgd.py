"""Tests of FGDLoss against an independent reference written the way yzd-v/FGD writes it."""
import copy
import inspect
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmdistill.losses.fast.fgd_blocked as fgd_blocked
import mmdistill.losses.fast.cpu_kernel as cpu_kernel
import mmdistill.losses.fast.fgd_kernel as fgd_kernel
from mmdistill.losses.fgd import FGDLoss, fgd_masks
from mmdistill.registry import DISTILL_LOSSES
from mmdistill.testing import RefFGD


# --------------------------------------------------------------------------------------------
# Reference: per-image / per-box Python loops, separate fg and bg passes, separate attention
# function, official module names (so that our state_dict loads into it unchanged).
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
def _randomise_zero_init(loss: nn.Module) -> None:
    """Give the zero-initialised last convs (and the LayerNorms) non-trivial values."""
    for block in (loss.channel_add_conv_s, loss.channel_add_conv_t):
        nn.init.normal_(block[-1].weight, std=0.5)
        nn.init.normal_(block[-1].bias, std=0.5)
        nn.init.normal_(block[1].weight, mean=1.0, std=0.2)
        nn.init.normal_(block[1].bias, std=0.2)
    for conv in (loss.conv_mask_s, loss.conv_mask_t):
        nn.init.normal_(conv.bias, std=0.5)


def _pair(cs, ct, **kwargs):
    ours = FGDLoss(cs, ct, **kwargs)
    _randomise_zero_init(ours)
    ref = RefFGD(cs, ct, **kwargs)
    ref.load_state_dict(ours.state_dict())  # same official names, strict
    return ours.double(), ref.double()


def _random_boxes(n, img_h, img_w, dtype=torch.float64):
    xy = torch.rand(n, 2, dtype=dtype) * torch.tensor([img_w, img_h], dtype=dtype) * 0.9
    wh = torch.rand(n, 2, dtype=dtype) * torch.tensor([img_w, img_h], dtype=dtype) * 0.5 + 1
    return torch.cat([xy, xy + wh], dim=1)


# img_shape, (H, W) of the level, boxes per image
CASES = {
    'overlap_border_empty': (
        (80, 112), (10, 14), [
            torch.tensor([[10., 8., 60., 50.], [30., 20., 90., 70.], [32., 24., 40., 30.]]),
            # touching the right/bottom border, partly outside right/bottom, partly outside left/top
            torch.tensor([[100., 70., 112., 80.], [90., 60., 130., 95.], [-6., -5., 20., 15.]]),
            torch.zeros(0, 4),
        ]),
    # H, W of a stride-8 level of a non-square padded input (ceil(100/8), ceil(150/8))
    'level_of_nonsquare_input': (
        (100, 150), (13, 19), [
            torch.tensor([[0., 0., 150., 100.]]),  # the whole image: no background
            torch.tensor([[12.5, 7.3, 33.3, 91.7], [140., 1., 149.9, 9.]]),
        ]),
    'all_images_without_boxes': ((64, 64), (8, 8), [torch.zeros(0, 4), torch.zeros(0, 4)]),
}


@pytest.mark.parametrize('channels', [(8, 8), (6, 8)], ids=['same_channels', 'align'])
@pytest.mark.parametrize('case', list(CASES))
def test_matches_official_reference(channels, case):
    img_shape, (h, w), boxes = CASES[case]
    boxes = [b.double() for b in boxes]
    cs, ct = channels
    ours, ref = _pair(cs, ct, temp=0.8, gamma_fgd=5e-4)
    assert (ours.align is None) == (cs == ct)
    n = len(boxes)
    preds_s = torch.randn(n, cs, h, w, dtype=torch.float64)
    preds_t = torch.randn(n, ct, h, w, dtype=torch.float64) * 1.5 + 0.3
    got = ours(preds_s, preds_t, gt_bboxes=boxes, img_shape=img_shape)
    expected = ref(preds_s, preds_t, boxes, img_shape)
    assert got.dim() == 0 and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_matches_reference_many_random_boxes():
    img_shape, (h, w) = (96, 160), (12, 20)
    boxes = [_random_boxes(k, *img_shape) for k in (5, 0, 12, 1)]
    ours, ref = _pair(4, 10)
    preds_s = torch.randn(4, 4, h, w, dtype=torch.float64) * 3
    preds_t = torch.randn(4, 10, h, w, dtype=torch.float64) * 3
    got = ours(preds_s, preds_t, boxes, img_shape)
    expected = ref(preds_s, preds_t, boxes, img_shape)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_each_term_against_reference():
    """Switch terms on one at a time so a wrong term cannot hide behind a larger one."""
    img_shape, (h, w), boxes = CASES['overlap_border_empty']
    boxes = [b.double() for b in boxes]
    preds_s = torch.randn(3, 8, h, w, dtype=torch.float64)
    preds_t = torch.randn(3, 8, h, w, dtype=torch.float64)
    for i in range(4):
        weights = [0.0] * 4
        weights[i] = 1.0
        kw = dict(zip(('alpha_fgd', 'beta_fgd', 'gamma_fgd', 'lambda_fgd'), weights))
        ours, ref = _pair(8, 8, **kw)
        got = ours(preds_s, preds_t, boxes, img_shape)
        expected = ref(preds_s, preds_t, boxes, img_shape)
        assert expected > 0
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_masks_match_reference_large_batch():
    """30 boxes x 8 images on a 100x152 grid (P3 of an 800x1216 input)."""
    img_shape, (h, w) = (800, 1216), (100, 152)
    boxes = [_random_boxes(30, *img_shape, dtype=torch.float32) for _ in range(8)]
    fg, bg = fgd_masks(boxes, img_shape, h, w, torch.float64, torch.device('cpu'))
    ref_fg, ref_bg = RefFGD.get_masks(boxes, img_shape, 8, h, w, torch.float64)
    torch.testing.assert_close(fg, ref_fg, rtol=1e-12, atol=0)
    torch.testing.assert_close(bg, ref_bg, rtol=1e-12, atol=0)


def test_masks_hand_computed_tiny_grid():
    # 4x4 grid from a 32x32 input; box (x1, y1, x2, y2) = (8, 8, 20, 16):
    # wmin = floor(8/32*4) = 1, wmax = ceil(20/32*4) = ceil(2.5) = 3,
    # hmin = floor(8/32*4) = 1, hmax = ceil(16/32*4) = 2
    # -> rows 1..2, cols 1..3 (6 cells), each 1/((2+1-1)*(3+1-1)) = 1/6; 10 background cells.
    fg, bg = fgd_masks([torch.tensor([[8., 8., 20., 16.]])], (32, 32), 4, 4, torch.float64,
                       torch.device('cpu'))
    s = 1 / 6
    expected_fg = torch.tensor([[0, 0, 0, 0],
                                [0, s, s, s],
                                [0, s, s, s],
                                [0, 0, 0, 0]], dtype=torch.float64)
    expected_bg = (expected_fg == 0).double() / 10
    torch.testing.assert_close(fg[0], expected_fg, rtol=0, atol=1e-15)
    torch.testing.assert_close(bg[0], expected_bg, rtol=0, atol=1e-15)


def test_masks_overlap_keeps_max_and_empty_image():
    # Box A: rows 0..2, cols 0..2 (9 cells) -> 1/9; box B: rows 2..3, cols 2..3 (4) -> 1/4.
    boxes = [torch.tensor([[0., 0., 2., 2.], [2., 2., 3., 3.]]), torch.zeros(0, 4)]
    fg, bg = fgd_masks(boxes, (4, 4), 4, 4, torch.float64, torch.device('cpu'))
    a, b = 1 / 9, 1 / 4
    expected = torch.tensor([[a, a, a, 0],
                             [a, a, a, 0],
                             [a, a, b, b],
                             [0, 0, b, b]], dtype=torch.float64)
    torch.testing.assert_close(fg[0], expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(bg[0], (expected == 0).double() / 4, rtol=0, atol=1e-15)
    assert fg[1].abs().sum() == 0
    torch.testing.assert_close(bg[1], torch.full((4, 4), 1 / 16, dtype=torch.float64))


# The CPU kernel paints the pixel weights box by box: the same values as the torch masks, on
# the edge cases above, a large random batch, a point box and boxes outside the image.
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_kernel_pixel_weights_match_masks(dtype):
    assert fgd_kernel.available(torch.zeros(1, dtype=dtype)), fgd_kernel.KERNEL.failed
    outside = torch.tensor([[5., 5., 5., 5.], [-50., -40., -10., -5.], [300., 300., 400., 400.]])
    cases = list(CASES.values()) + [
        ((800, 1216), (100, 152), [_random_boxes(30, 800, 1216, torch.float32)
                                   for _ in range(8)]),
        ((80, 112), (10, 14), [outside, torch.tensor([[10., 8., 60., 50.]])])]
    for img_shape, (h, w), boxes in cases:
        loss = FGDLoss(4, 4, alpha_fgd=1e-3, beta_fgd=5e-4).to(dtype)
        feat = torch.zeros(len(boxes), 4, h, w, dtype=dtype)
        fg, bg = fgd_masks(boxes, img_shape, h, w, dtype, feat.device)
        expected = (loss.alpha_fgd * fg + loss.beta_fgd * bg).reshape(len(boxes), h * w)
        got = loss.pixel_weights(boxes, img_shape, feat)
        assert got.dtype == dtype and got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=2 * torch.finfo(dtype).eps, atol=0)


def test_gradients():
    img_shape, (h, w), boxes = CASES['overlap_border_empty']
    loss = FGDLoss(6, 8, alpha_fgd=1.0, beta_fgd=1.0, gamma_fgd=1.0, lambda_fgd=1.0)
    _randomise_zero_init(loss)
    preds_s = torch.randn(3, 6, h, w, requires_grad=True)
    preds_t = torch.randn(3, 8, h, w, requires_grad=True)
    loss(preds_s, preds_t, boxes, img_shape).backward()
    assert preds_s.grad is not None and preds_s.grad.abs().sum() > 0
    assert preds_t.grad is None
    largest = max(float(p.grad.abs().max()) for p in loss.parameters() if p.grad is not None)
    for name, p in loss.named_parameters():
        if name.startswith('conv_mask_') and name.endswith('.bias'):
            # a shift of the softmax logits: its gradient is 0 (float32 rounding leaves a trace)
            assert p.grad is None or p.grad.abs().max() < 1e-4 * largest, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


PASSES = ['kernel', 'one_block', 'channel_blocks', 'kernel_streamed', 'image_blocks']


def use_passes(passes: str, monkeypatch) -> None:
    """Run the fast form with ``passes``: the CPU kernel in tiles of 8 locations (several tiles
    and tasks per image; ``kernel_streamed``: the student gradient written with non-temporal
    stores and the tiles sized, as for maps in memory), or the eager passes in one block, in
    blocks of 7 elements per thread (channel ranges) or of 1500 (several images)."""
    if passes.startswith('kernel'):
        assert fgd_kernel.available(torch.zeros(1)), fgd_kernel.KERNEL.failed
        monkeypatch.setattr(fgd_kernel, 'TILE_IN_CACHE', 8)
        monkeypatch.setattr(fgd_kernel, 'TILE_IN_MEMORY', 8)
        if passes == 'kernel_streamed':
            monkeypatch.setattr(fgd_kernel, 'IN_MEMORY_BYTES', 0)
        return
    monkeypatch.setattr(fgd_kernel, 'available', lambda x: False)
    block = dict(one_block=None, channel_blocks=7, image_blocks=1500)[passes]
    if block is not None:
        monkeypatch.setattr(fgd_blocked, '_CPU_BLOCK_PER_THREAD', block)


# The loss has a hand-written backward: every gradient (student features, align conv, both
# GcBlocks) against autograd through the reference, with each form of the passes.
@pytest.mark.parametrize('passes', PASSES)
@pytest.mark.parametrize('channels', [(8, 8), (6, 8)], ids=['same_channels', 'align'])
def test_gradients_match_reference(channels, passes, monkeypatch):
    use_passes(passes, monkeypatch)
    img_shape, (h, w) = (96, 160), (12, 20)
    boxes = [_random_boxes(k, *img_shape) for k in (5, 0, 12, 1, 3)]
    cs, ct = channels
    ours, ref = _pair(cs, ct, temp=0.8, alpha_fgd=1.0, beta_fgd=0.7, gamma_fgd=0.5,
                      lambda_fgd=0.3)
    preds_t = torch.randn(5, ct, h, w, dtype=torch.float64) * 1.5 + 0.3
    preds_s = torch.randn(5, cs, h, w, dtype=torch.float64)
    preds_s[0, :2, :3] = 0  # abs'(0) = 0 in both
    grads = []
    for loss in (ours, ref):
        s = preds_s.clone().requires_grad_()
        (1.7 * loss(s, preds_t, boxes, img_shape)).backward()
        grads.append({'preds_S': s.grad, **{k: p.grad for k, p in loss.named_parameters()}})
    assert grads[0].keys() == grads[1].keys()
    for name, expected in grads[1].items():
        got = grads[0][name]
        assert got is not None and got.shape == expected.shape, name
        if name in ('conv_mask_s.bias', 'conv_mask_t.bias'):
            # a constant shift of the softmax logits: the true gradient is 0
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12, msg=name)
        else:
            assert expected.abs().max() > 0, name
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9 * expected.abs().max(),
                                       msg=name)


def test_frozen_parameters_and_no_grad():
    img_shape, (h, w), boxes = CASES['overlap_border_empty']
    boxes = [b.double() for b in boxes]
    ours, ref = _pair(6, 8)
    preds_s = torch.randn(3, 6, h, w, dtype=torch.float64)
    preds_t = torch.randn(3, 8, h, w, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(preds_s, preds_t, boxes, img_shape),
                                   ref(preds_s, preds_t, boxes, img_shape), rtol=1e-6, atol=0)
    ours.channel_add_conv_t.requires_grad_(False)
    ours.conv_mask_s.weight.requires_grad_(False)
    ours(preds_s, preds_t, boxes, img_shape).backward()  # the student needs no gradient
    for name, p in ours.named_parameters():
        assert (p.grad is None) == (not p.requires_grad), name


def test_official_init():
    loss = FGDLoss(256, 256)
    for block in (loss.channel_add_conv_s, loss.channel_add_conv_t):
        assert block[-1].weight.abs().sum() == 0 and block[-1].bias.abs().sum() == 0
        assert isinstance(block[1], nn.LayerNorm) and block[1].normalized_shape == (128, 1, 1)
    for conv in (loss.conv_mask_s, loss.conv_mask_t):
        assert conv.bias.abs().sum() == 0
        # kaiming normal, fan_in = 256, relu gain: std = sqrt(2 / 256)
        assert abs(conv.weight.std().item() - math.sqrt(2 / 256)) < 0.03
    # With the zero-initialised adds the global term is sum((S - T)^2) / N.
    loss = FGDLoss(4, 4, alpha_fgd=0, beta_fgd=0, gamma_fgd=0, lambda_fgd=1.0).double()
    s = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    t = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    out = loss(s, t, [torch.zeros(0, 4)] * 2, (24, 40))
    torch.testing.assert_close(out, (s - t).square().sum() / 2)


@pytest.mark.parametrize('channels', [(8, 8), (6, 8)], ids=['same_channels', 'align'])
def test_half_precision_large_magnitude(channels):
    cs, ct = channels
    img_shape, (h, w), boxes = CASES['overlap_border_empty']
    loss = FGDLoss(cs, ct)
    _randomise_zero_init(loss)
    preds_s = (torch.randn(3, cs, h, w) * 300).half()
    preds_t = (torch.randn(3, ct, h, w) * 300).half()
    out16 = loss(preds_s, preds_t, boxes, img_shape)
    out32 = loss(preds_s.float(), preds_t.float(), boxes, img_shape)
    assert torch.isfinite(out16)
    # the inputs are large enough that a sum of squares in half precision overflows
    assert torch.isinf(preds_t.square().sum())
    torch.testing.assert_close(out16.float(), out32, rtol=1e-2, atol=0)


def test_interface():
    assert DISTILL_LOSSES.get('FGDLoss') is FGDLoss
    assert FGDLoss.extra_inputs == ('gt_bboxes', 'img_shape')
    assert FGDLoss.channel_args == ('student_channels', 'teacher_channels')
    params = inspect.signature(FGDLoss).parameters
    defaults = {k: v.default for k, v in params.items()}
    assert defaults['student_channels'] is inspect.Parameter.empty
    assert defaults['teacher_channels'] is inspect.Parameter.empty
    # official FeatureLoss defaults (yzd-v/FGD mmdet/distillation/losses/fgd.py)
    assert defaults['temp'] == 0.5 and defaults['alpha_fgd'] == 0.001
    assert defaults['beta_fgd'] == 0.0005 and defaults['gamma_fgd'] == 0.001
    assert defaults['lambda_fgd'] == 0.000005
    built = DISTILL_LOSSES.build(dict(type='FGDLoss', student_channels=16, teacher_channels=32))
    assert isinstance(built, FGDLoss) and built.align.weight.shape == (32, 16, 1, 1)


def test_pixel_normalisation_is_the_loss_of_standardised_maps():
    """normalize='pixel': the official loss of maps whose every location is standardised over
    its channels (an affine-free LayerNorm over C, written here with F.layer_norm)."""
    img_shape, (h, w), boxes = CASES['overlap_border_empty']
    boxes = [b.double() for b in boxes]
    ours, ref = _pair(8, 8)
    ours_norm = FGDLoss(8, 8, normalize='pixel').double()
    ours_norm.load_state_dict(ours.state_dict())

    def layer_norm_c(x):
        return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1], ), eps=1e-5).permute(0, 3, 1, 2)

    preds_s = torch.randn(3, 8, h, w, dtype=torch.float64) * 5 + 2
    preds_t = torch.randn(3, 8, h, w, dtype=torch.float64) * 0.2 - 1
    expected = ref(layer_norm_c(preds_s), layer_norm_c(preds_t), boxes, img_shape)
    got = ours_norm(preds_s, preds_t, boxes, img_shape)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    # scale-free: scaling the student's map changes nothing
    torch.testing.assert_close(ours_norm(preds_s * 7, preds_t, boxes, img_shape), got,
                               rtol=1e-5, atol=0)
    assert not torch.isclose(ours(preds_s, preds_t, boxes, img_shape), got)
    with pytest.raises(ValueError, match='normalize'):
        FGDLoss(8, 8, normalize='channel')


# The fast form (each form of the passes, hand-written backward) against the definition in this
# package (FGDLoss.loss_by_definition through autograd): value and every gradient, in float64.
@pytest.mark.parametrize('passes', PASSES[:4])
@pytest.mark.parametrize('normalize', [None, 'pixel'])
@pytest.mark.parametrize('channels', [(8, 8), (6, 7)], ids=['same_channels', 'align_odd'])
def test_fast_form_matches_definition(channels, normalize, passes, monkeypatch):
    use_passes(passes, monkeypatch)
    img_shape, (h, w) = (96, 160), (12, 20)
    boxes = [_random_boxes(k, *img_shape) for k in (5, 0, 12)]
    cs, ct = channels
    fast = FGDLoss(cs, ct, temp=0.8, alpha_fgd=1.0, beta_fgd=0.7, gamma_fgd=0.5,
                   lambda_fgd=0.3, normalize=normalize).double()
    _randomise_zero_init(fast)
    definition = copy.deepcopy(fast)
    definition.fast_form = False
    preds_s = torch.randn(3, cs, h, w, dtype=torch.float64)
    preds_t = torch.randn(3, ct, h, w, dtype=torch.float64) * 1.5 + 0.3
    with torch.no_grad():
        torch.testing.assert_close(fast(preds_s, preds_t, boxes, img_shape),
                                   definition(preds_s, preds_t, boxes, img_shape),
                                   rtol=1e-10, atol=0)
    outs, grads = [], []
    for loss in (fast, definition):
        s = preds_s.clone().requires_grad_()
        out = loss(s, preds_t, boxes, img_shape)
        (1.7 * out).backward()
        outs.append(out.detach())
        grads.append({'preds_S': s.grad, **{k: p.grad for k, p in loss.named_parameters()}})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=0)
    assert grads[0].keys() == grads[1].keys()
    for name, expected in grads[1].items():
        got = grads[0][name]
        assert got is not None and got.shape == expected.shape, name
        atol = 1e-12 if name.startswith('conv_mask') and name.endswith('bias') else \
            1e-9 * expected.abs().max()
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=atol, msg=name)


def _fast_and_definition(c: int, dtype=torch.float64, **kwargs) -> tuple[FGDLoss, FGDLoss]:
    fast = FGDLoss(c, c, temp=0.8, alpha_fgd=1.0, beta_fgd=0.7, gamma_fgd=0.5, lambda_fgd=0.3,
                   **kwargs).to(dtype)
    _randomise_zero_init(fast)
    definition = copy.deepcopy(fast).double()
    definition.fast_form = False
    return fast, definition


def _loss_and_grads(loss, preds_s, preds_t, boxes, img_shape):
    s = preds_s.clone().requires_grad_()
    out = loss(s, preds_t, boxes, img_shape)
    out.backward()
    return out.detach(), s.grad


# The CPU kernel's softmaxes are accumulated against a running maximum, rescaled as it grows
# tile by tile and combined over tasks: logits of hundreds, rising along the locations (the
# maximum changes in every tile), would overflow exp without it.
@pytest.mark.parametrize('threads', [1, 3])
def test_kernel_large_rising_logits(threads, monkeypatch):
    use_passes('kernel', monkeypatch)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: threads)  # 4 tasks per thread
    img_shape, (h, w) = (96, 160), (12, 20)
    boxes = [_random_boxes(k, *img_shape) for k in (5, 0)]
    fast, definition = _fast_and_definition(8)
    ramp = torch.linspace(0, 120, h * w, dtype=torch.float64).reshape(h, w)
    preds_s = torch.randn(2, 8, h, w, dtype=torch.float64) * 5 + ramp
    preds_t = torch.randn(2, 8, h, w, dtype=torch.float64) * 3 + ramp.flip(0, 1) * 2
    with torch.no_grad():
        fast.conv_mask_s.weight.fill_(1.0)  # logits up to ~1000: exp overflows float64
        fast.conv_mask_t.weight.fill_(-1.0)
        definition.load_state_dict(fast.state_dict())
    out, grad = _loss_and_grads(fast, preds_s, preds_t, boxes, img_shape)
    ref, grad_ref = _loss_and_grads(definition, preds_s, preds_t, boxes, img_shape)
    assert torch.isfinite(out) and torch.isfinite(grad).all()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-8, atol=1e-10 * grad_ref.abs().max())
    scale = max(float(p.grad.abs().max()) for p in fast.parameters())
    for (name, p), q in zip(fast.named_parameters(), definition.parameters()):
        if name.startswith('conv_mask') and name.endswith('bias'):  # a softmax shift: 0
            assert float(p.grad.abs().max()) <= 1e-10 * scale, name
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9 * q.grad.abs().max(),
                                   msg=name)


def test_kernel_float32_close_to_float64_definition(monkeypatch):
    use_passes('kernel', monkeypatch)
    img_shape, (h, w) = (96, 160), (12, 20)
    boxes = [_random_boxes(k, *img_shape) for k in (5, 3)]
    fast, definition = _fast_and_definition(16, dtype=torch.float32)
    preds_s = torch.randn(2, 16, h, w, dtype=torch.float64)
    preds_t = torch.randn(2, 16, h, w, dtype=torch.float64) * 1.5 + 0.3
    out, grad = _loss_and_grads(fast, preds_s.float(), preds_t.float(), boxes, img_shape)
    ref, grad_ref = _loss_and_grads(definition, preds_s, preds_t, boxes, img_shape)
    assert out.dtype == torch.float32
    assert float(out) == pytest.approx(float(ref), rel=1e-5)
    assert float((grad.double() - grad_ref).abs().max()) <= 1e-5 * float(grad_ref.abs().max())


def test_kernel_not_built_falls_back_to_eager_passes(monkeypatch, tmp_path):
    """No working C++ compiler: the kernel is not built, once, and the eager passes give the
    same loss; with the compiler back it is built into the cache once and found there."""
    kernel = fgd_kernel.KERNEL
    monkeypatch.setattr(kernel, 'lib', None)
    monkeypatch.setattr(kernel, 'failed', None)
    monkeypatch.setenv('MMDISTILL_CACHE', str(tmp_path))
    monkeypatch.setenv('CXX', 'false')  # exits 1 for every command
    calls = []
    real_compile = cpu_kernel.compile_source
    monkeypatch.setattr(cpu_kernel, 'compile_source',
                        lambda *a: calls.append(a) or real_compile(*a))
    x = torch.zeros(1)
    assert not fgd_kernel.available(x) and not fgd_kernel.available(x)
    assert 'false' in kernel.failed and len(calls) == 0  # `false --version` already fails
    img_shape, (h, w) = (96, 160), (12, 20)
    boxes = [_random_boxes(k, *img_shape) for k in (5, 3)]
    fast, definition = _fast_and_definition(8)
    preds_s = torch.randn(2, 8, h, w, dtype=torch.float64)
    preds_t = torch.randn(2, 8, h, w, dtype=torch.float64)
    out, grad = _loss_and_grads(fast, preds_s, preds_t, boxes, img_shape)
    ref, grad_ref = _loss_and_grads(definition, preds_s, preds_t, boxes, img_shape)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-8, atol=1e-12)
    monkeypatch.delenv('CXX')
    monkeypatch.setattr(kernel, 'failed', None)
    assert fgd_kernel.available(x)
    built = list((tmp_path / 'kernels').glob('fgd_kernel_*.so'))
    assert len(built) == 1 and len(calls) == 1
    monkeypatch.setattr(kernel, 'lib', None)
    assert fgd_kernel.available(x) and len(calls) == 1


# A second backward through a retained graph (DistillBalanceHook measures each loss's gradient
# that way): the kernel's backward keeps the channel transforms' graph and its saved tensors.
def test_kernel_second_backward_through_retained_graph(monkeypatch):
    use_passes('kernel', monkeypatch)
    img_shape, (h, w) = (96, 160), (12, 20)
    boxes = [_random_boxes(k, *img_shape) for k in (5, 3)]
    fast, _ = _fast_and_definition(8)
    s = torch.randn(2, 8, h, w, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 8, h, w, dtype=torch.float64)
    out = fast(s, t, boxes, img_shape)
    out.backward(retain_graph=True)
    first = [s.grad.clone()] + [p.grad.clone() for p in fast.parameters()]
    (0.5 * out).backward()
    for got, once in zip([s.grad] + [p.grad for p in fast.parameters()], first):
        torch.testing.assert_close(got, 1.5 * once, rtol=1e-12, atol=1e-15)


# Under no_grad (validation) the kernel computes the value only, even for a student map that
# requires a gradient; in training, the value and the gradients.
def test_kernel_computes_gradients_only_when_recorded(monkeypatch):
    use_passes('kernel', monkeypatch)
    calls = []
    real = fgd_kernel.loss_and_grads

    def spy(*args, **kwargs):
        calls.append(kwargs['want_grad'])
        return real(*args, **kwargs)

    monkeypatch.setattr(fgd_kernel, 'loss_and_grads', spy)
    img_shape, (h, w), boxes = CASES['overlap_border_empty']
    fast, _ = _fast_and_definition(8)
    s = torch.randn(3, 8, h, w, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 8, h, w, dtype=torch.float64)
    with torch.no_grad():
        fast(s, t, boxes, img_shape)
    fast(s, t, boxes, img_shape).backward()
    assert calls == [False, True]
    assert s.grad is not None


@pytest.mark.parametrize('l2_size, channels, dtype, tile', [
    ('1024K', 256, torch.float32, 128),   # two tiles of S and T in half the L2
    ('512K', 256, torch.float32, 64),
    ('2048K', 256, torch.float32, 256),   # capped at TILE_IN_MEMORY
    ('1024K', 256, torch.float64, 64),
    ('1024K', 4096, torch.float32, 16),   # at least 16
    (None, 256, torch.float32, 128),      # no L2 described: DEFAULT_L2_BYTES (1 MiB)
])
def test_kernel_tile_from_l2_size(l2_size, channels, dtype, tile, monkeypatch, tmp_path):
    """Maps in memory are read in tiles sized by the L2 that sysfs describes; maps that fit
    the caches in tiles of TILE_IN_CACHE."""
    for index, (level, size) in enumerate([('1', '48K'), ('2', l2_size), ('3', '32768K')]):
        if size is not None:
            (tmp_path / f'index{index}').mkdir()
            (tmp_path / f'index{index}' / 'level').write_text(level + '\n')
            (tmp_path / f'index{index}' / 'size').write_text(size + '\n')
    monkeypatch.setattr(cpu_kernel, 'CPU_CACHE_DIR', str(tmp_path))
    cpu_kernel.l2_bytes.cache_clear()
    try:
        in_memory = torch.empty(2, channels, fgd_kernel.IN_MEMORY_BYTES // channels, dtype=dtype)
        assert fgd_kernel._tile(in_memory) == tile
        in_cache = torch.empty(1, channels, 64, dtype=dtype)
        assert fgd_kernel._tile(in_cache) == fgd_kernel.TILE_IN_CACHE
    finally:
        cpu_kernel.l2_bytes.cache_clear()

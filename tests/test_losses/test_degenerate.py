"""Every registered loss on degenerate but legal inputs: the value is finite, the student's
inputs (and the loss's own parameters) get finite gradients, the teacher's inputs none.

One row of :data:`TABLE` per loss: how to build it, how to turn a :class:`Spec` (batch size,
kind of values, labels, boxes, map size) into its inputs, and the cases that apply to it. The
test iterates the registry, so a newly registered loss without a row fails here.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import mmdistill.losses as losses
from mmdistill.losses.base import ModelModules
from mmdistill.registry import DISTILL_LOSSES

NUM_CLASSES = 5
IMG_SHAPE = (64, 64)
REG_MAX = 3  # LD / CrossKD: 4 x 4 bins
SDD_REGIONS = 21  # scales (1, 2, 4)
Boxes = tuple[tuple[tuple[float, float, float, float], ...], ...]
Labels = tuple[int, ...] | tuple[tuple[float, ...], ...]


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Spec:
    """What a case feeds a loss; each row's ``make`` turns it into that loss's inputs.

    Attributes:
        n: batch size (detection: the number of images in ``boxes``).
        kind: the values of the maps / logits (:func:`values`).
        hw: spatial size of the maps (detection: of the FPN level).
        labels: hard labels (N,), soft labels (N, K), or None (the row picks ordinary ones).
        boxes: per image, xyxy boxes in input pixels of ``IMG_SHAPE``.
        dtype: dtype of the student's and teacher's tensors.
    """

    n: int = 4
    kind: str = 'random'
    hw: tuple[int, int] = (4, 4)
    labels: Labels | None = None
    boxes: Boxes = (((8., 8., 40., 32.), (30., 20., 60., 56.)), ((4., 40., 20., 60.), ))
    dtype: torch.dtype = torch.float32


@dataclass
class Inputs:
    """``loss(preds_S, preds_T, **extra)``; ``logits_S`` in ``extra`` is a student tensor."""

    preds_S: Tensor | list[Tensor]
    preds_T: Tensor | list[Tensor]
    extra: dict[str, Any] = field(default_factory=dict)

    def student_tensors(self) -> list[Tensor]:
        tensors = list(self.preds_S) if isinstance(self.preds_S, list) else [self.preds_S]
        return tensors + ([self.extra['logits_S']] if 'logits_S' in self.extra else [])

    def teacher_tensors(self) -> list[Tensor]:
        return list(self.preds_T) if isinstance(self.preds_T, list) else [self.preds_T]


def values(shape: tuple[int, ...], kind: str, dtype: torch.dtype = torch.float32,
           teacher: bool = False) -> Tensor:
    """A leaf tensor of ``shape``: ``random`` N(0, 1), ``constant`` (0.5 for the student, 0.25
    for the teacher), ``zero``, ``large`` N(0, 1e4^2), ``large_negative`` about -1e4."""
    if kind == 'random':
        x = torch.randn(shape)
    elif kind == 'constant':
        x = torch.full(shape, 0.25 if teacher else 0.5)
    elif kind == 'zero':
        x = torch.zeros(shape)
    elif kind == 'large':
        x = 1e4 * torch.randn(shape)
    elif kind == 'large_negative':
        x = -1e4 - torch.rand(shape)
    else:
        raise ValueError(f'unknown kind {kind!r}')
    return x.to(dtype)


def label_tensor(spec: Spec) -> Tensor:
    """The case's labels: (N,) long or (N, K) soft; ordinary ``arange(N) % K`` when unset."""
    if spec.labels is None:
        return torch.arange(spec.n) % NUM_CLASSES
    if isinstance(spec.labels[0], tuple):
        return torch.tensor(spec.labels, dtype=torch.float32)
    return torch.tensor(spec.labels, dtype=torch.long)


def box_tensors(spec: Spec) -> list[Tensor]:
    return [torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) for boxes in spec.boxes]


def image_batch(spec: Spec) -> Spec:
    """``spec`` with the batch size of its boxes (detection: one map per image)."""
    return replace(spec, n=len(spec.boxes))


# ----------------------------------------------------------------------------- makers
def map_pair(spec: Spec, student_channels: int, teacher_channels: int) -> tuple[Tensor, Tensor]:
    """(N, Cs, H, W) student and (N, Ct, H, W) teacher maps."""
    return (values((spec.n, student_channels, *spec.hw), spec.kind, spec.dtype),
            values((spec.n, teacher_channels, *spec.hw), spec.kind, spec.dtype, teacher=True))


def make_maps(spec: Spec, student_channels: int = 4, teacher_channels: int = 8) -> Inputs:
    return Inputs(*map_pair(spec, student_channels, teacher_channels))


def make_maps_and_indices(spec: Spec) -> Inputs:
    """CRD: maps and the samples' dataset indices."""
    return Inputs(*map_pair(spec, 4, 8), dict(indices=torch.arange(spec.n)))


def make_maps_and_labels(spec: Spec, student_channels: int = 4,
                         teacher_channels: int = 8) -> Inputs:
    """CCD, SDD with classifiers: maps and labels."""
    return Inputs(*map_pair(spec, student_channels, teacher_channels),
                  dict(gt_labels=label_tensor(spec)))


def make_logits(spec: Spec, labels: bool = True) -> Inputs:
    """(N, K) student and teacher logits (and labels)."""
    shape = (spec.n, NUM_CLASSES)
    extra = dict(gt_labels=label_tensor(spec)) if labels else {}
    return Inputs(values(shape, spec.kind, spec.dtype),
                  values(shape, spec.kind, spec.dtype, teacher=True), extra)


def make_region_logits(spec: Spec) -> Inputs:
    """SDD / CTKD(base='sdd') without classifier: (N, K, M) region logits and labels."""
    shape = (spec.n, NUM_CLASSES, SDD_REGIONS)
    return Inputs(values(shape, spec.kind, spec.dtype),
                  values(shape, spec.kind, spec.dtype, teacher=True),
                  dict(gt_labels=label_tensor(spec)))


def make_ofa(spec: Spec) -> Inputs:
    """OFA (stages 2, 3, 4): student stage features, teacher logits, labels, student logits.
    The last stage is ``spec.hw``; stages 2 and 3 are 4x and 2x larger."""
    h, w = spec.hw
    feats = [values((spec.n, c, h * f, w * f), spec.kind, spec.dtype)
             for c, f in ((4, 4), (8, 2), (8, 1))]
    shape = (spec.n, NUM_CLASSES)
    return Inputs(feats, values(shape, spec.kind, spec.dtype, teacher=True),
                  dict(gt_labels=label_tensor(spec),
                       logits_S=values(shape, spec.kind, spec.dtype)))


def make_fgd(spec: Spec) -> Inputs:
    """FGD: one level's maps (Cs 4, Ct 8), boxes and the input shape."""
    return Inputs(*map_pair(image_batch(spec), 4, 8),
                  dict(gt_bboxes=box_tensors(spec), img_shape=IMG_SHAPE))


def make_ld(spec: Spec) -> Inputs:
    """LD: one level's box logits (N, 4 (reg_max + 1), H, W), boxes and the input shape."""
    c = 4 * (REG_MAX + 1)
    return Inputs(*map_pair(image_batch(spec), c, c),
                  dict(gt_bboxes=box_tensors(spec), img_shape=IMG_SHAPE))


CROSSKD_CHANNELS = 8


def make_crosskd(spec: Spec) -> Inputs:
    """CrossKD, two levels (``spec.hw`` and 2x it): the student's cls/reg tower features, the
    teacher's, the teacher's class and box logits; and the boxes."""
    spec = image_batch(spec)
    h, w = spec.hw
    sizes = [(2 * h, 2 * w), (h, w)]

    def tower_features(teacher: bool) -> list[Tensor]:
        return [values((spec.n, CROSSKD_CHANNELS, *size), spec.kind, spec.dtype, teacher)
                for _tower in ('cls', 'reg') for size in sizes]

    logits = [values((spec.n, c, *size), spec.kind, spec.dtype, teacher=True)
              for c in (NUM_CLASSES, 4 * (REG_MAX + 1)) for size in sizes]
    return Inputs(tower_features(False), tower_features(True) + logits,
                  dict(gt_bboxes=box_tensors(spec)))


# ----------------------------------------------------------------------------- builders
def build_ctkd(**kwargs: Any) -> losses.CTKDLoss:
    """CTKD with the temperature's gradient reversal on (so that ``theta`` gets a gradient)."""
    loss = losses.CTKDLoss(**kwargs)
    loss.lambda_ = 1.0
    return loss


def build_sdd_with_classifier(channels: int = 8) -> losses.SDDLoss:
    """SDD applying each model's own linear classifier to the pooled regions of its map."""
    student_fc = nn.Linear(channels, NUM_CLASSES)
    teacher_fc = nn.Linear(channels, NUM_CLASSES).requires_grad_(False)
    return losses.SDDLoss(classifier=(student_fc, teacher_fc))


def build_crosskd(**kwargs: Any) -> losses.CrossKDLoss:
    """CrossKD with the branches of a tiny frozen GFL teacher head (stacked_convs 2, the tap
    after the first conv's norm)."""
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    from tests.utils import tiny_gfl
    register_all_modules(init_default_scope=False)
    cfg = tiny_gfl(fpn_channels=CROSSKD_CHANNELS, num_classes=NUM_CLASSES,
                   reg_max=REG_MAX)['bbox_head']
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = MODELS.build(cfg).requires_grad_(False)
    cls_branch = ModelModules([head.cls_convs[0].activate, head.cls_convs[1], head.gfl_cls])
    reg_branch = ModelModules([head.reg_convs[0].activate, head.reg_convs[1], head.gfl_reg,
                               head.scales])
    return losses.CrossKDLoss(cls_branch, reg_branch, reg_max=REG_MAX, **kwargs)


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One degenerate input of one loss.

    Attributes:
        name: what is degenerate.
        spec: the inputs (the row's ``make`` builds them).
        loss_kwargs: arguments of the row's ``build`` for this case.
        build: builds the loss instead of the row's ``build`` (None: the row's).
        make: builds the inputs instead of the row's ``make`` (None: the row's).
        expected: the value, where the definition gives it exactly.
        check: a further check ``check(loss, inputs, value)`` of the value.
        raises: the loss refuses the input with this error (documented exception).
    """

    name: str
    spec: Spec = Spec()
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    build: Callable[..., nn.Module] | None = None
    make: Callable[[Spec], Inputs] | None = None
    expected: float | None = None
    check: Callable[[nn.Module, Inputs, Tensor], None] | None = None
    raises: type[Exception] | None = None


# labels (K = 5)
CLASS_ABSENT = Case('a class absent from the batch', Spec(labels=(0, 1, 0, 1)))
ONE_CLASS = Case('all samples of one class', Spec(labels=(2, 2, 2, 2)))
BATCH_OF_ONE = Case('a batch of one', Spec(n=1, labels=(3, )))
SOFT_LABELS = Case('soft labels', Spec(n=2, labels=((.1, .2, .3, .15, .25),
                                                    (.6, .1, .1, .1, .1))))
TIED_SOFT_LABELS = Case('soft labels with a tie (CutMix 50/50)',
                        Spec(n=2, labels=((.5, .5, 0., 0., 0.), (0., 0., 0., .5, .5))))
LABEL_CASES = [CLASS_ABSENT, ONE_CLASS, BATCH_OF_ONE, SOFT_LABELS, TIED_SOFT_LABELS]
# values
CONSTANT = Case('constant inputs (zero variance)', Spec(kind='constant'))
ZERO = Case('all-zero inputs', Spec(kind='zero'))
LARGE = Case('large finite values (1e4)', Spec(kind='large'))
LARGE_HALF = Case('large finite values (1e4) in float16', Spec(kind='large', dtype=torch.float16))
# maps
ONE_BY_ONE = Case('a 1x1 map', Spec(n=2, hw=(1, 1)))
ONE_BY_ONE_BATCH_OF_ONE = Case('a 1x1 map, batch of one', Spec(n=1, hw=(1, 1)))
MAP_CASES = [ONE_BY_ONE, CONSTANT, ZERO, LARGE]


def box_case(name: str, boxes: Boxes, hw: tuple[int, int] = (8, 8), **kwargs: Any) -> Case:
    return Case(name, Spec(n=len(boxes), boxes=boxes, hw=hw), **kwargs)


# boxes on a 64 x 64 input, level 8 x 8 (stride 8) unless said
NO_BOX_IMAGE = box_case('an image without boxes', (((8., 8., 40., 32.), ), ()))
ZERO_SIZE_BOXES = box_case('boxes of zero width or height', (
    ((16., 8., 16., 40.), (8., 24., 48., 24.)), ((20., 20., 20., 20.), )))
PARTLY_OUTSIDE = box_case('boxes partly outside the image', (
    ((-16., -8., 24., 20.), (40., 50., 90., 80.)), ((50., -20., 70., 30.), )))
WHOLLY_OUTSIDE = box_case('boxes wholly outside the image', (
    ((-40., -40., -8., -8.), ), ((70., 10., 100., 30.), (64., 64., 80., 80.))))
ALL_EMPTY = box_case('every image empty', ((), ()))
WHOLE_IMAGE_BOX = box_case('a box covering the whole image', (
    ((0., 0., 64., 64.), ), ((-10., -10., 80., 80.), )))
ONE_PIXEL_LEVEL = box_case('a one-pixel level', Spec().boxes, hw=(1, 1))
ONE_PIXEL_LEVEL_ONE_IMAGE = box_case('a one-pixel level, batch of one',
                                     (((8., 8., 40., 32.), ), ), hw=(1, 1))
BOX_CASES = [NO_BOX_IMAGE, ZERO_SIZE_BOXES, PARTLY_OUTSIDE, WHOLLY_OUTSIDE, ALL_EMPTY,
             WHOLE_IMAGE_BOX, ONE_PIXEL_LEVEL, ONE_PIXEL_LEVEL_ONE_IMAGE]


def unchanged_without(weight: str) -> Callable[[nn.Module, Inputs, Tensor], None]:
    """The value does not change when the loss's ``weight`` is 0: its term is empty (FGD's
    foreground term without a foreground cell, its background term without a background one)."""
    def check(loss: nn.Module, inputs: Inputs, value: Tensor) -> None:
        setattr(loss, weight, 0.0)
        with torch.no_grad():
            without = loss(inputs.preds_S, inputs.preds_T, **inputs.extra)
        assert float(without) == pytest.approx(float(value), rel=1e-6)
    return check


def exact(case: Case, value: float) -> Case:
    return replace(case, expected=value)


def with_loss(case: Case, suffix: str, **loss_kwargs: Any) -> Case:
    return replace(case, name=f'{case.name}, {suffix}', loss_kwargs=loss_kwargs)


@dataclass
class Row:
    """A loss's row: ``build(**case.loss_kwargs)`` gives the module, ``make(spec)`` its inputs."""

    build: Callable[..., nn.Module]
    make: Callable[[Spec], Inputs]
    cases: list[Case]


IDENTICAL_AT_CONSTANT = exact(CONSTANT, 0.0)  # both distributions uniform

TABLE: dict[str, Row] = {
    # detection, boxes
    'FGDLoss': Row(partial(losses.FGDLoss, 4, 8), make_fgd, [
        NO_BOX_IMAGE, ZERO_SIZE_BOXES, PARTLY_OUTSIDE,
        replace(WHOLLY_OUTSIDE, check=unchanged_without('alpha_fgd')),
        replace(ALL_EMPTY, check=unchanged_without('alpha_fgd')),
        replace(WHOLE_IMAGE_BOX, check=unchanged_without('beta_fgd')),
        ONE_PIXEL_LEVEL, ONE_PIXEL_LEVEL_ONE_IMAGE, CONSTANT, ZERO, LARGE,
        with_loss(CONSTANT, 'pixel-standardised', normalize='pixel'),
        with_loss(LARGE, 'pixel-standardised', normalize='pixel'),
        with_loss(ONE_PIXEL_LEVEL, 'pixel-standardised', normalize='pixel')]),
    'LDLoss': Row(partial(losses.LDLoss, reg_max=REG_MAX), make_ld, [
        NO_BOX_IMAGE, ZERO_SIZE_BOXES, PARTLY_OUTSIDE, exact(WHOLLY_OUTSIDE, 0.0),
        exact(ALL_EMPTY, 0.0), WHOLE_IMAGE_BOX, ONE_PIXEL_LEVEL, ONE_PIXEL_LEVEL_ONE_IMAGE,
        IDENTICAL_AT_CONSTANT, LARGE, with_loss(LARGE, 'no area weight', area_weight=False)]),
    'CrossKDLoss': Row(build_crosskd, make_crosskd, [
        *BOX_CASES, CONSTANT, LARGE,
        Case('large negative teacher logits (-1e4: every location background)',
             Spec(kind='large_negative'))]),
    # dense features
    'MGDLoss': Row(partial(losses.MGDLoss, 4, 8), make_maps, [
        *MAP_CASES, ONE_BY_ONE_BATCH_OF_ONE,
        with_loss(ONE_BY_ONE, 'channel mask', mask_type='channel')]),
    'CWDLoss': Row(partial(losses.CWDLoss, student_channels=4, teacher_channels=8), make_maps, [
        exact(ONE_BY_ONE, 0.0), exact(CONSTANT, 0.0), exact(ZERO, 0.0), LARGE,
        exact(ONE_BY_ONE_BATCH_OF_ONE, 0.0), with_loss(LARGE, 'tau 4', tau=4.0)]),
    'PKDLoss': Row(partial(losses.PKDLoss, student_channels=4, teacher_channels=8), make_maps, [
        ONE_BY_ONE, CONSTANT, exact(ZERO, 0.0), LARGE,
        exact(ONE_BY_ONE_BATCH_OF_ONE, 0.0), BATCH_OF_ONE]),
    # a 1x1 map of a batch of one has one value per channel, which training-mode BatchNorm
    # refuses (as the student's own BatchNorm layers would at that size)
    'FitNetLoss': Row(partial(losses.FitNetLoss, 4, 8), make_maps, [
        *MAP_CASES, BATCH_OF_ONE,
        with_loss(ONE_BY_ONE_BATCH_OF_ONE, 'no BatchNorm', use_bn=False)]),
    'ATLoss': Row(losses.ATLoss, make_maps, [
        exact(ONE_BY_ONE, 0.0), exact(CONSTANT, 0.0), exact(ZERO, 0.0), LARGE,
        exact(ONE_BY_ONE_BATCH_OF_ONE, 0.0)]),
    'CosineLoss': Row(partial(losses.CosineLoss, student_channels=4, teacher_channels=8),
                      make_maps, [*MAP_CASES, ONE_BY_ONE_BATCH_OF_ONE,
                                  with_loss(ZERO, 'pooled', pool=True)]),
    # embeddings over the batch
    'CRDLoss': Row(partial(losses.CRDLoss, 4, 8, feat_dim=8, nce_k=4, n_data=8),
                   make_maps_and_indices,
                   [*MAP_CASES, ONE_BY_ONE_BATCH_OF_ONE, BATCH_OF_ONE]),
    'InfoNCELoss': Row(partial(losses.InfoNCELoss, student_channels=4, teacher_channels=8),
                       make_maps, [
        ONE_BY_ONE, exact(CONSTANT, math.log(4)), exact(ZERO, math.log(4)), LARGE,
        exact(BATCH_OF_ONE, 0.0)]),  # no negatives: the positive is the only candidate
    'CCDLoss': Row(partial(losses.CCDLoss, 4, 8, num_classes=NUM_CLASSES), make_maps_and_labels,
                   [*LABEL_CASES, *MAP_CASES, ONE_BY_ONE_BATCH_OF_ONE]),
    # logits
    'KDLoss': Row(losses.KDLoss, partial(make_logits, labels=False), [
        BATCH_OF_ONE, IDENTICAL_AT_CONSTANT, LARGE, LARGE_HALF,
        exact(with_loss(CONSTANT, 'logit standardisation', logit_stand=True), 0.0),
        with_loss(LARGE, 'logit standardisation', logit_stand=True),
        with_loss(LARGE_HALF, 'logit standardisation', logit_stand=True),
        with_loss(CLASS_ABSENT, 'zero class weight', class_weight=[1., 0., 1., 1., 1.])]),
    'DKDLoss': Row(losses.DKDLoss, make_logits,
                   [*LABEL_CASES, IDENTICAL_AT_CONSTANT, LARGE, LARGE_HALF]),
    'SDDLoss': Row(losses.SDDLoss, make_region_logits, [
        *LABEL_CASES, IDENTICAL_AT_CONSTANT, LARGE, LARGE_HALF,
        replace(ONE_BY_ONE, name='a 1x1 map through the classifiers',
                build=build_sdd_with_classifier,
                make=partial(make_maps_and_labels, student_channels=8, teacher_channels=8))]),
    'CTKDLoss': Row(build_ctkd, make_logits, [
        *[with_loss(c, 'base kd', base='kd') for c in (BATCH_OF_ONE, CONSTANT, LARGE)],
        *[with_loss(c, 'base dkd', base='dkd') for c in (*LABEL_CASES, CONSTANT, LARGE)],
        *[replace(with_loss(c, 'base sdd', base='sdd'), make=make_region_logits)
          for c in (*LABEL_CASES, CONSTANT, LARGE)]]),
    # OFA's projectors end in BatchNorm at the last stage's size: 2x2 there for a batch of one
    'OFALoss': Row(partial(losses.OFALoss, [4, 8, 8], NUM_CLASSES, ofa_stage=(2, 3, 4),
                           teacher_channels=8), make_ofa, [
        *[replace(c, spec=replace(c.spec, hw=(2, 2))) for c in LABEL_CASES],
        replace(ONE_BY_ONE, name='a 1x1 last stage'),
        replace(CONSTANT, spec=Spec(kind='constant', hw=(2, 2))),
        replace(LARGE, spec=Spec(kind='large', hw=(2, 2))),
        with_loss(replace(LARGE, spec=Spec(kind='large', hw=(2, 2))), 'eps 1.5, T 4',
                  ofa_eps=1.5, ofa_temperature=4.0)]),
}


def package_losses() -> list[str]:
    """The losses mmdistill registers (a test may register its own; those are not rows)."""
    return sorted(name for name, cls in DISTILL_LOSSES.module_dict.items()
                  if cls.__module__.startswith('mmdistill.'))


def all_cases() -> list[Any]:
    params = []
    for name in package_losses():
        row = TABLE.get(name)
        if row is None:  # a loss without a row fails below
            params.append(pytest.param(name, None, id=f'{name}-no row'))
            continue
        params += [pytest.param(name, case, id=f'{name}-{case.name}') for case in row.cases]
    return params


def test_every_row_is_a_registered_loss():
    assert set(TABLE) <= set(package_losses())


def trainable_parameters(loss: nn.Module) -> dict[str, Tensor]:
    """The loss's own trainable parameters, and those of model modules it holds (SDD's
    student classifier, CrossKD's teacher branches when trainable)."""
    params = {name: p for name, p in loss.named_parameters() if p.requires_grad}
    for attr, value in vars(loss).items():
        held = value if isinstance(value, tuple) else (value, )
        for i, modules in enumerate(held):
            if isinstance(modules, ModelModules):
                params.update({f'{attr}.{i}.{j}': p for j, p in enumerate(modules.parameters())
                               if p.requires_grad})
    return params


@pytest.mark.parametrize('loss_name, case', all_cases())
def test_degenerate_input_gives_a_finite_loss_and_gradients(loss_name: str,
                                                            case: Case | None) -> None:
    if case is None:
        pytest.fail(f'{loss_name} is registered but has no row in TABLE of {__file__}')
    row = TABLE[loss_name]
    loss = (case.build or row.build)(**case.loss_kwargs)
    inputs = (case.make or row.make)(case.spec)
    students, teachers = inputs.student_tensors(), inputs.teacher_tensors()
    for tensor in students + teachers:
        tensor.requires_grad_()
    if case.raises is not None:
        with pytest.raises(case.raises):
            loss(inputs.preds_S, inputs.preds_T, **inputs.extra)
        return

    value = loss(inputs.preds_S, inputs.preds_T, **inputs.extra)
    assert value.dim() == 0 and torch.isfinite(value), f'loss {value}'
    if case.expected is not None:
        assert float(value) == pytest.approx(case.expected, abs=1e-6)
    value.backward()
    for i, tensor in enumerate(students):
        assert tensor.grad is not None, f'student input {i} got no gradient'
        assert torch.isfinite(tensor.grad).all(), f'student input {i}: {tensor.grad}'
    assert all(tensor.grad is None for tensor in teachers), 'a teacher input got a gradient'
    for name, param in trainable_parameters(loss).items():
        assert param.grad is None or torch.isfinite(param.grad).all(), f'{name}: {param.grad}'
    if case.check is not None:
        case.check(loss, inputs, value.detach())

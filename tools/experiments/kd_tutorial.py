"""The PyTorch knowledge-distillation tutorial's CIFAR-10 experiment, run with mmdistill.

"Knowledge Distillation Tutorial" (A. Chariton,
pytorch.org/tutorials/beginner/knowledge_distillation_tutorial.html): a DeepNN teacher and a
LightNN student, trained 10 epochs with Adam (lr 0.001), batch 128, no augmentation, ImageNet
normalisation; rows CE alone, CE + KD (T 2, KD 0.25 / CE 0.75), CE + cosine loss on the
flattened hidden representations (0.25 / 0.75), CE + MSE of a regressor on the conv feature
maps (0.25 / 0.75). Its published test accuracies (trained on all 50,000 images): teacher 75.49,
student 70.81, KD 71.40, cosine 70.69, regressor 71.13.

The two networks are registered here as mmpretrain backbones, so that an ``ImageClassifier``
with a ``StackedLinearClsHead`` (Linear -> ReLU -> Dropout 0.1 -> Linear) is the tutorial's
network layer for layer, with PyTorch's default initialisation. The tutorial's "modified"
networks return a hidden representation beside the logits; here it is a tap on a submodule:

* cosine: the student's flattened conv output (``backbone.flatten``, 1024 values) against the
  teacher's flattened conv output average-pooled by 2 (``backbone.hidden``, 2048 -> 1024);
* regressor: the student's conv features (``backbone.features``, 16 x 8 x 8) through a 3x3 conv
  regressor (owned by ``FitNetLoss``, no BatchNorm, no ReLU, as the tutorial's) against the
  teacher's conv features (32 x 8 x 8).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS
from torch import nn

from .cifar import NUM_CLASSES

#: the tutorial's transforms.Normalize(mean, std) on [0, 1] images, in 0-255
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
PUBLISHED = dict(teacher=75.49, alone=70.81, kd=71.40, cosine=70.69, regressor=71.13)


class _TutorialNet(BaseBackbone):
    """Conv features -> flatten; returns ``((N, C*H*W),)`` for the classifier head."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__(init_cfg=None)  # PyTorch's default initialisation, as the tutorial
        self.features = features
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.flatten(self.features(x)), )


@MODELS.register_module()
class TutorialDeepNN(_TutorialNet):
    """The tutorial's DeepNN conv part: 3->128->64, pool, 64->64->32, pool (32 x 8 x 8 = 2048).

    ``hidden`` is the tutorial's cosine hidden representation (``ModifiedDeepNNCosine``):
    ``avg_pool1d(flattened, 2)``, ``(N, 2048) -> (N, 1024)``, computed in every forward (as
    there) and used only as a tap.
    """

    def __init__(self) -> None:
        super().__init__(nn.Sequential(
            nn.Conv2d(3, 128, 3, padding=1), nn.ReLU(),
            nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)))
        self.hidden = _AvgPool1d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        (flat, ) = super().forward(x)
        self.hidden(flat)
        return (flat, )


@MODELS.register_module()
class TutorialLightNN(_TutorialNet):
    """The tutorial's LightNN conv part: 3->16, pool, 16->16, pool (16 x 8 x 8 = 1024)."""

    def __init__(self) -> None:
        super().__init__(nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)))


class _AvgPool1d(nn.Module):
    """``F.avg_pool1d(x, k)`` on ``(N, L)``: averages neighbouring pairs, ``(N, L // k)``."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(x, self.kernel_size)


def tutorial_net(name: str, ce_weight: float = 1.0) -> dict:
    """``ImageClassifier`` config of the tutorial's ``'DeepNN'`` or ``'LightNN'``."""
    in_channels, mid = dict(DeepNN=(2048, 512), LightNN=(1024, 256))[name]
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=NUM_CLASSES, mean=MEAN,
                               std=STD, to_rgb=True),
        backbone=dict(type=f'Tutorial{name}'),
        head=dict(type='StackedLinearClsHead', num_classes=NUM_CLASSES,
                  in_channels=in_channels, mid_channels=[mid], dropout_rate=0.1,
                  act_cfg=dict(type='ReLU'), init_cfg=None,
                  loss=dict(type='CrossEntropyLoss', loss_weight=ce_weight), topk=(1, )))


def tutorial_config(model: dict, data_root: str, work_dir: str, iters: int, name: str,
                    seed: int = 0, batch_size: int = 128, test_subset: int | None = None,
                    curve_subset: int = 2000, **runtime) -> dict:
    """A full mmpretrain config: no augmentation, shuffled batches of 128, Adam lr 0.001 (no
    schedule), top-1 on the test images (all, or ``test_subset`` of them); validation (the
    learning curve) on ``curve_subset`` training images."""
    from .cifar import classification_config
    # DefaultSampler in an iteration loop: whole epochs, reshuffled each (set_epoch)
    return classification_config(
        model, data_root, work_dir, iters, name,
        [dict(type='LoadImageFromFile'), dict(type='PackInputs')],
        dict(type='DefaultSampler', shuffle=True), batch_size,
        dict(optimizer=dict(type='Adam', lr=0.001)), [], seed, test_subset, curve_subset,
        **runtime)

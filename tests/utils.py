"""Tiny real mmdet/mmseg models and batches for the wrapper tests."""
from __future__ import annotations

import os

import torch


def tiny_retinanet(base_channels: int = 16, fpn_channels: int = 32, num_classes: int = 3,
                   mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)) -> dict:
    """A RetinaNet with a narrow ResNet-18 and a one-conv head (real mmdet modules)."""
    from mmdistill.demo import retinanet
    return retinanet(base_channels, fpn_channels, num_classes, stacked_convs=1, mean=mean,
                     std=std, octave_base_scale=4)


def save_teacher(cfg: dict, path: str, seed: int = 1, scope: str = 'mmdet') -> dict:
    """Build ``cfg`` in ``scope``, initialise it, save ``{'state_dict': ...}``; return the state."""
    import importlib

    from mmengine.config import ConfigDict
    MODELS = importlib.import_module(f'{scope}.registry').MODELS
    importlib.import_module(f'{scope}.utils').register_all_modules()
    cfg = ConfigDict(cfg)
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    state = model.state_dict()
    torch.save({'state_dict': state}, path)
    return state


def det_batch(n: int = 2, size: tuple[int, int] = (96, 128), num_classes: int = 3,
              seed: int = 0) -> dict:
    """A packed mmdet batch (uint8 images + DetDataSamples with boxes); image 1 has no box."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for i in range(n):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        k = 0 if i == 1 else 3
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 8
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0), img_id=i))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, num_classes, (k,), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


SEG_CONFIG = os.path.join(os.path.dirname(__file__), 'data', 'cwd_pspnet_tiny_camvid-mini.py')


def tiny_pspnets() -> tuple[dict, dict]:
    """(student, teacher) tiny PSPNet configs of the CamVid test config (11 classes)."""
    from mmengine.config import Config
    cfg = Config.fromfile(SEG_CONFIG)
    return cfg.model.student.to_dict(), cfg.model.teacher.config.model.to_dict()


def seg_batch(n: int = 2, size: tuple[int, int] = (64, 96), num_classes: int = 11,
              seed: int = 0) -> dict:
    """A packed mmseg batch: uint8 images and SegDataSamples with label maps."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes + 1, (1, h, w), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)

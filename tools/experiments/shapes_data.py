"""A small synthetic COCO-format detection set: shapes on textured backgrounds.

Every image holds filled shapes (circle, square, triangle) of random size, colour and place on
a background of noise, gradients and stripes. Boxes, polygon masks, areas and labels are
written as a COCO instances json, so mmdet's ``CocoDataset`` and ``CocoMetric`` read it as is.
The default: 1-4 shapes, radius 7-20 % of the image, uniform;
``radius=(lo, hi), log_radius=True`` spreads the sizes over every FPN level's scale (the
study's detection track); shapes are drawn largest first, so a small one is never hidden.
"""
from __future__ import annotations

import json
import os
import os.path as osp

import cv2
import numpy as np

SHAPE_CLASSES = ('circle', 'square', 'triangle')


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 200, 3)
    grad = rng.uniform(-60, 60, (2, 3))
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    period = rng.uniform(6, 24)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * size / period * 2 * np.pi)
    img += stripes[..., None] * rng.uniform(5, 25)
    img += rng.normal(0, 12, img.shape)
    return img


def _polygon(rng: np.random.Generator, label: int, cx: float, cy: float, r: float) -> np.ndarray:
    if label == 0:
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    if label == 1:
        return np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    rot = rng.uniform(0, 2 * np.pi)
    t = rot + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _radius(rng: np.random.Generator, size: int, radius: tuple[float, float],
            log_radius: bool) -> float:
    lo, hi = size * radius[0], size * radius[1]
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))) if log_radius
                 else rng.uniform(lo, hi))


def _image(rng: np.random.Generator, size: int, objects_range: tuple[int, int] = (1, 4),
           radius: tuple[float, float] = (0.07, 0.2),
           log_radius: bool = False) -> tuple[np.ndarray, list[dict]]:
    img = _background(rng, size)
    objects = []
    n = int(rng.integers(objects_range[0], objects_range[1] + 1))
    shapes = [(int(rng.integers(0, len(SHAPE_CLASSES))), _radius(rng, size, radius, log_radius))
              for _ in range(n)]
    if log_radius:
        shapes.sort(key=lambda shape: -shape[1])  # largest first: small shapes stay visible
    for label, r in shapes:
        cx, cy = rng.uniform(r, size - r, 2)
        poly = np.clip(_polygon(rng, label, cx, cy, r), 0, size - 1)
        colour = rng.uniform(0, 255, 3)
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], colour.tolist())
        x1, y1 = poly.min(0)
        x2, y2 = poly.max(0)
        objects.append(dict(label=label, bbox=[float(x1), float(y1), float(x2 - x1),
                                               float(y2 - y1)],
                            segmentation=[poly.reshape(-1).round(2).tolist()],
                            area=float(cv2.contourArea(poly.astype(np.float32)))))
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _write_split(root: str, split: str, n: int, size: int, rng: np.random.Generator,
                 **shape_args) -> str:
    os.makedirs(osp.join(root, split), exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        img, objects = _image(rng, size, **shape_args)
        name = f'{i:05d}.jpg'
        cv2.imwrite(osp.join(root, split, name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=i + 1, file_name=name, height=size, width=size))
        for obj in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1,
                                    category_id=obj['label'] + 1, bbox=obj['bbox'],
                                    area=obj['area'], segmentation=obj['segmentation'],
                                    iscrowd=0))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(SHAPE_CLASSES)]
    ann_file = osp.join(root, 'annotations', f'{split}.json')
    os.makedirs(osp.dirname(ann_file), exist_ok=True)
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return ann_file


def make_shapes_coco(root: str, n_train: int = 400, n_val: int = 100, size: int = 128,
                     seed: int = 0, objects: tuple[int, int] = (1, 4),
                     radius: tuple[float, float] = (0.07, 0.2),
                     log_radius: bool = False) -> dict[str, str]:
    """Write the set under ``root`` (``train/``, ``val/``, ``annotations/{train,val}.json``).

    Args:
        objects: least and most shapes per image.
        radius: least and largest shape radius, as fractions of ``size``.
        log_radius: radii log-uniform (as many shapes per octave of size), else uniform.

    Returns the annotation file of each split. The same arguments give the same set.
    """
    rng = np.random.default_rng(seed)
    args = dict(objects_range=tuple(objects), radius=tuple(radius), log_radius=log_radius)
    return {split: _write_split(root, split, n, size, rng, **args)
            for split, n in (('train', n_train), ('val', n_val))}

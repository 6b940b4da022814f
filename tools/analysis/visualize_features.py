"""Teacher, student and |difference| heatmaps of chosen taps over a few validation images.

    python tools/analysis/visualize_features.py CONFIG [--checkpoint CKPT] [--taps TAP ...]
        [--num-images 4] [--reduction squeeze_mean|select_max] [--out DIR]
        [--cfg-options k=v ...]

For each image one PNG, ``DIR/<image>.png``: a row per tap and level (``neck`` gives the five
FPN levels), columns student, teacher and |difference|, each overlaid on the image with
mmengine's ``Visualizer.draw_featmap`` (channels reduced by ``--reduction``, as in mmrazor's
feature visualisation). The difference is taken between the two channel-reduced maps, each
scaled to [0, 1], so that maps of different channel counts or scales compare.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.visualization import Visualizer

import mmdistill  # noqa: F401
from mmdistill.analysis.features import build_distiller, paired_features, tap_pairs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint')
    parser.add_argument('--taps', nargs='+')
    parser.add_argument('--num-images', type=int, default=4)
    parser.add_argument('--reduction', choices=['squeeze_mean', 'select_max'],
                        default='squeeze_mean')
    parser.add_argument('--out', default='work_dirs/visualize_features')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def reduced(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """(C, H, W) -> (1, H, W) in [0, 1]: channel mean (or the channel of largest mean)."""
    x = x.mean(0) if reduction == 'squeeze_mean' else x[x.mean((1, 2)).argmax()]
    x = x - x.min()
    return (x / x.max().clamp_min(1e-12))[None]


def heatmaps(fs: torch.Tensor, ft: torch.Tensor, image: np.ndarray,
             reduction: str) -> list[np.ndarray]:
    """Student, teacher and |difference| of one image's maps, overlaid on ``image`` (RGB)."""
    s, t = reduced(fs, reduction), reduced(ft, reduction)
    if s.shape != t.shape:
        t = F.interpolate(t[None], size=s.shape[-2:], mode='bilinear')[0]
    maps = [s, t, (s - t).abs()]
    return [Visualizer.draw_featmap(m, image, channel_reduction='squeeze_mean', alpha=0.5)
            for m in maps]


def image_of(inputs: torch.Tensor) -> np.ndarray:
    """A packed (3, H, W) uint8 BGR input (mmcv's LoadImageFromFile) as (H, W, 3) RGB, at
    least 256 pixels high so that the heatmaps can be read."""
    import mmcv
    image = np.ascontiguousarray(inputs.permute(1, 2, 0).numpy().astype(np.uint8)[..., ::-1])
    scale = max(1, 256 // image.shape[0])
    return mmcv.imrescale(image, scale) if scale > 1 else image


def main() -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    cfg.val_dataloader.batch_size = 1
    loader = Runner.build_dataloader(cfg.val_dataloader, seed=0)
    model = build_distiller(cfg, args.checkpoint)
    os.makedirs(args.out, exist_ok=True)
    written = []
    with paired_features(model, tap_pairs(model, args.taps)) as features:
        for i, batch in enumerate(loader):
            if i == args.num_images:
                break
            image = image_of(batch['inputs'][0])
            feats = features(batch)
            fig, axes = plt.subplots(len(feats), 3, figsize=(9, 2.6 * len(feats)),
                                     squeeze=False)
            for row, (name, (fs, ft)) in zip(axes, feats.items()):
                for ax, picture, title in zip(row, heatmaps(fs[0], ft[0], image, args.reduction),
                                              ('student', 'teacher', '|difference|')):
                    ax.imshow(picture)
                    ax.set_title(f'{name}: {title}', fontsize=8)
                    ax.axis('off')
            sample = batch['data_samples'][0]
            stem = osp.splitext(osp.basename(sample.metainfo.get('img_path', f'image{i}')))[0]
            path = osp.join(args.out, f'{stem}.png')
            fig.tight_layout()
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    print('\n'.join(f'wrote {p}' for p in written))


if __name__ == '__main__':
    main()

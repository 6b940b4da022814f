"""Time the skip of a resumed run: mmengine's (load and discard the trained batches) vs ours
(advance the batch sampler by index), on a config's real train dataloader.

    python tools/analysis/benchmark_resume.py [CONFIG] [--iters 2000] [--workers N]
        [--cfg-options k=v ...]

Default: the FGD RetinaNet config (mmdet's COCO pipeline: 1333x800 resize, random flip, batch 2)
on ../shared/data/coco_tiny (80 images, 40 batches an epoch). Both skips end by loading the first
batch after the skipped ones; both yield the same indices (checked). mmengine's iterator pauses
2 s at each epoch end; the table gives that part separately.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import time

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.runner.loops import _InfiniteDataloaderIterator

import mmdistill  # noqa: F401
from mmdistill.engine.loops import fast_forward, fast_forward_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT = osp.join(ROOT, 'configs', 'fgd',
                   'fgd_retinanet_x101-64x4d-fpn_retinanet_r50-fpn_2x_coco.py')
COCO_TINY = osp.join(osp.dirname(ROOT), 'shared', 'data', 'coco_tiny') + '/'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', default=DEFAULT)
    parser.add_argument('--iters', type=int, default=2000, help='iteration resumed at')
    parser.add_argument('--workers', type=int, help='num_workers (default: the config\'s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def indices(batch) -> list:
    return [s.img_id if hasattr(s, 'img_id') else s.metainfo.get('img_path')
            for s in batch['data_samples']]


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.config == DEFAULT:
        cfg.train_dataloader.dataset.data_root = COCO_TINY
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.workers is not None:
        cfg.train_dataloader.num_workers = args.workers
        cfg.train_dataloader.persistent_workers = args.workers > 0
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    loader_cfg = cfg.train_dataloader.to_dict()
    n = args.iters

    stock = Runner.build_dataloader(loader_cfg, seed=0)
    per_epoch = len(stock)
    start = time.perf_counter()
    it = _InfiniteDataloaderIterator(stock)
    for _ in range(n):
        next(it)
    first_stock = indices(next(it))
    t_stock = time.perf_counter() - start
    pauses = 2.0 * (n // per_epoch)

    ours = Runner.build_dataloader(fast_forward_config(loader_cfg), seed=0)
    start = time.perf_counter()
    it = fast_forward(ours, n)
    first_ours = indices(next(it))
    t_ours = time.perf_counter() - start
    assert first_ours == first_stock, (first_ours, first_stock)

    print(f'Resume at iteration {n}: {args.config} ({per_epoch} batches an epoch, batch '
          f'{loader_cfg["batch_size"]}, {loader_cfg.get("num_workers", 0)} workers, '
          f'{os.cpu_count()} CPUs); same first batch after the skip: {first_ours}\n')
    print('| skip | seconds | of which epoch-end pauses |\n|---|--:|--:|')
    print(f'| mmengine (load and discard) | {t_stock:.1f} | {pauses:.0f} |')
    print(f'| mmdistill (advance the sampler) | {t_ours:.2f} | 0 |')
    print(f'\nratio {t_stock / t_ours:.0f}x; without the pauses '
          f'{(t_stock - pauses) / t_ours:.0f}x')


if __name__ == '__main__':
    main()

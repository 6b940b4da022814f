"""Command-line pieces shared by tools/train.py and tools/test.py (mmdet's conventions)."""
from __future__ import annotations

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local-rank``."""
    parser.add_argument('--work-dir', help='the dir to save logs, models and metrics')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, e.g. train_cfg.max_iters=10')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def build_runner(cfg: Config):
    """The runner ``cfg.runner_type`` names (as mmdet's tools do), by default
    :class:`~mmdistill.engine.DistillRunner`, which prepares the config itself."""
    from mmengine.registry import RUNNERS

    from .runner import DistillRunner  # noqa: F401  (registers it)
    cfg.setdefault('runner_type', 'DistillRunner')
    return RUNNERS.build(cfg)


def config_from_args(args: argparse.Namespace) -> Config:
    """The config ``args.config`` with the common arguments applied (work dir defaults like
    mmdet's)."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg

"""Train a model (a distillation config or any plain config) with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v]
"""
import argparse

from mmdistill.engine import use_amp
from mmdistill.engine.cli import add_common_args, build_runner, config_from_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a (distillation) model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision where the device runs it natively: fp16 '
                        'AmpOptimWrapper on GPUs, bf16 (and the student in channels-last) on '
                        'CPUs with AVX512-BF16 or AMX-BF16, fp32 (logged) on other CPUs; the '
                        "teacher gets teacher_autocast='auto' unless the config sets it")
    parser.add_argument('--auto-scale-lr', action='store_true', help='enable auto-scale LR')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest one in the work dir')
    add_common_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = config_from_args(args)
    if args.amp:
        use_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr: the config has no auto_scale_lr = '
                             'dict(base_batch_size=...) (the total batch its lr is set for); add '
                             'it, e.g. dict(enable=False, base_batch_size=16) for 8 GPUs x 2')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()

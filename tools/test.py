"""Test a checkpoint with mmengine's Runner. Distillation configs run the student alone.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--cfg-options k=v]
"""
import argparse

from mmdistill.engine import distiller_class
from mmdistill.engine.cli import add_common_args, build_runner, config_from_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a (distilled) model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to a pickle file')
    add_common_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = config_from_args(args)
    cfg.load_from = args.checkpoint
    if distiller_class(cfg) is not None:
        cfg.model.skip_teacher = True  # the student alone: no teacher is built or loaded
    if args.out is not None:
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(cfg.test_evaluator, dict) \
            else list(cfg.test_evaluator)
        cfg.test_evaluator.append(dict(type='DumpResults', out_file_path=args.out))
    runner = build_runner(cfg)
    runner.test()


if __name__ == '__main__':
    main()

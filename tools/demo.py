"""The mmdistill demo: one seed of the study's detection track beside its five (no download).

    python3 tools/demo.py [--work-dir work_dirs/demo] [--seed 0] [--workers 2]
"""
import argparse
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # mmengine's import
from mmdistill.demo import run_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=2,
                        help='processes sharing the runs (one per core)')
    args = parser.parse_args()
    run_demo(args.work_dir, args.seed, args.workers)


if __name__ == '__main__':
    main()

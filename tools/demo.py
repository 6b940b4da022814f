"""The mmdistill demo: FGD and PKD on a synthetic shapes set (no download; minutes on 2 CPUs).

    python tools/demo.py [--work-dir work_dirs/demo] [--teacher-iters 600] [--student-iters 300]
        [--seeds 0]
"""
import argparse
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # mmengine's import
from mmdistill.demo import run_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--teacher-iters', type=int, default=600)
    parser.add_argument('--student-iters', type=int, default=300)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    args = parser.parse_args()
    run_demo(args.work_dir, args.teacher_iters, args.student_iters, tuple(args.seeds))


if __name__ == '__main__':
    main()

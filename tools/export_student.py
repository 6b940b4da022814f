"""Write a plain checkpoint of the student: no teacher, no loss modules, no optimizer.

    python tools/export_student.py CONFIG CHECKPOINT OUT.pth [--student-config OUT.py]

The export loads strictly with the stock APIs: ``mmdet.apis.init_detector(student_cfg, OUT)``,
``mmseg.apis.init_model`` or ``mmpretrain.get_model``. Works for checkpoints of DDP and AMP runs.
"""
import argparse

from mmdistill.export import export_student


def main() -> None:
    parser = argparse.ArgumentParser(description='Export the student of a distillation run')
    parser.add_argument('config', help='the distillation config of the run')
    parser.add_argument('checkpoint', help='a training checkpoint of the run')
    parser.add_argument('out', help='where to write the student checkpoint')
    parser.add_argument('--student-config', help='also write the student\'s own config here')
    args = parser.parse_args()
    n = export_student(args.config, args.checkpoint, args.out, args.student_config)
    print(f'wrote {n} student tensors to {args.out}'
          + (f' and its config to {args.student_config}' if args.student_config else ''))


if __name__ == '__main__':
    main()

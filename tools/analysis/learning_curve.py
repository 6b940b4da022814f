"""One model of the detection track trained alone, with its learning curve on training images:
the runs that chose the track's setting (README, "How the detection setting was chosen").

    python3 tools/analysis/learning_curve.py NAME ITERS WIDTH [--seed 0]
        [--work-dir work_dirs/study] [--threads 1]

Trains RetinaNet R18-w<WIDTH> (FPN 64) for ITERS iterations from the seed's initial weights on
the track's data (written under ``<work-dir>/det/data``), validates 8 times on the first 200
training images, tests on the val images, and writes ``<work-dir>/<NAME>.json``.
"""
import argparse
import json
import os.path as osp
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # tools.experiments
    sys.path.insert(0, ROOT)

from tools.experiments.runtime import save_init, train_and_test, with_init  # noqa: E402
from tools.experiments.shapes import retinanet  # noqa: E402
from tools.experiments.study import detection_track  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('name')
    parser.add_argument('iters', type=int)
    parser.add_argument('width', type=int)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--work-dir', default='work_dirs/study')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    track = detection_track(osp.join(args.work_dir, 'det'))
    track.prepare(None)
    model = retinanet(args.width, 64, 3, octave_base_scale=1)
    init = save_init(model, 'mmdet', osp.join(args.work_dir, f'{args.name}_init.pth'), args.seed)
    run_dir = osp.join(args.work_dir, args.name)
    cfg = track.config(with_init(model, init), run_dir, args.iters, args.name, args.seed,
                       val_interval=args.iters // 8)
    start = time.time()
    out = train_and_test(cfg, args.name, track.metric, track.defaults)
    with open(osp.join(run_dir, 'val_curve.jsonl')) as f:
        curve = [json.loads(line) for line in f]
    result = dict(name=args.name, iters=args.iters, width=args.width, seed=args.seed,
                  val=out.get(track.metric), seconds=time.time() - start,
                  curve=[(c['iter'], c[track.metric]) for c in curve])
    with open(osp.join(args.work_dir, f'{args.name}.json'), 'w') as f:
        json.dump(result, f)
    print(json.dumps(result))


if __name__ == '__main__':
    main()

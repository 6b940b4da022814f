"""One model of a study track trained alone, with its learning curve on training images: the
runs that chose the tracks' settings (README, "How the detection setting was chosen";
``docs/study/setting``).

    python3 tools/analysis/learning_curve.py NAME ITERS WIDTH [--track det] [--seed 0]
        [--work-dir work_dirs/study] [--threads 1] [--data-root ../shared/data]

``det``: RetinaNet R18-w<WIDTH> (FPN 64) on the detection track's data (written under
``<work-dir>/det/data``); ``seg``: PSPNet R18-w<WIDTH> (head channels 2 x WIDTH) on CamVid mini.
Trains ITERS iterations from the seed's initial weights, validates 8 times on training images
(det: the first 200; seg: all 74), tests on the val images, and writes
``<work-dir>/<NAME>.json``.
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
from tools.experiments.study import Track, detection_track, segmentation_track  # noqa: E402


def track_and_model(track_name: str, width: int, work_dir: str,
                    data_root: str) -> tuple[Track, dict]:
    """The track (its data prepared) and the model of ``width`` trained on it."""
    if track_name == 'det':
        from tools.experiments.shapes import retinanet
        track = detection_track(osp.join(work_dir, 'det'))
        track.prepare(None)
        return track, retinanet(width, 64, 3, octave_base_scale=1)
    if track_name == 'seg':
        from tools.experiments.camvid import pspnet
        track = segmentation_track(osp.join(data_root, 'camvid_mini'))
        return track, pspnet(width, width * 2, track.dry_run_shape)
    raise ValueError(f'--track must be det or seg, got {track_name!r}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('name')
    parser.add_argument('iters', type=int)
    parser.add_argument('width', type=int)
    parser.add_argument('--track', default='det', choices=('det', 'seg'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--work-dir', default='work_dirs/study')
    parser.add_argument('--data-root', default=osp.join(ROOT, '..', 'shared', 'data'))
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    track, model = track_and_model(args.track, args.width, args.work_dir, args.data_root)
    init = save_init(model, track.scope, osp.join(args.work_dir, f'{args.name}_init.pth'),
                     args.seed)
    run_dir = osp.join(args.work_dir, args.name)
    cfg = track.config(with_init(model, init), run_dir, args.iters, args.name, args.seed,
                       val_interval=args.iters // 8)
    start = time.time()
    out = train_and_test(cfg, args.name, track.metric, track.defaults)
    with open(osp.join(run_dir, 'val_curve.jsonl')) as f:
        curve = [json.loads(line) for line in f]
    result = dict(name=args.name, track=args.track, iters=args.iters, width=args.width,
                  seed=args.seed, val=out.get(track.metric), seconds=time.time() - start,
                  curve=[(c['iter'], c[track.metric]) for c in curve])
    with open(osp.join(args.work_dir, f'{args.name}.json'), 'w') as f:
        json.dump(result, f)
    print(json.dumps(result))


if __name__ == '__main__':
    main()

"""The distillation study: each method against the right baseline, over seeds, on three tracks.

    python3 tools/analysis/distill_study.py [--tracks det seg cls] [--seeds 0 1 2 3 4]
        [--methods fgd_inherit det:cwd_auto ...] [--work-dir work_dirs/study]
        [--results-dir docs/study] [--threads 1] [--reuse] [--quick]
        [--precision fp32|fast-teacher|amp]

Tracks: ``det`` (RetinaNet on the synthetic shapes set, written on the fly), ``seg`` (PSPNet on
``../shared/data/camvid_mini``), ``cls`` (CIFAR ResNet on ``../shared/data/cifar10``),
``tutorial`` (the PyTorch KD tutorial's DeepNN -> LightNN on the same CIFAR-10 subset),
``det_share`` (the share of the balanced detection rows, chosen on held-out training images).

Each finished run is a small JSON file in ``--results-dir`` (``<track>/<key>_seed<s>.json``;
default ``docs/study``, ``<work-dir>/results`` with ``--quick``), beside each track's teacher
(result and learning curve; its weights stay in the work dir, a machine without them trains
it again): commit them, and ``--reuse`` resumes the study on any machine. Two processes
started with the same command (``--reuse``, one per core) share the runs (each claims a run
before training it); a last call with ``--gather`` (or ``--reuse``) writes ``study.json``,
``study.md`` and ``study.png`` into the results dir. ``--quick`` is the CI smoke test (tiny
sizes, a few iterations: its numbers mean nothing). See :mod:`tools.experiments.study`.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import shlex
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # tools.experiments
    sys.path.insert(0, ROOT)

from mmdistill.engine.machine import machine_info  # noqa: E402
from tools.experiments.report import plot_study, study_markdown  # noqa: E402
from tools.experiments.study import (chosen_share, classification_track,  # noqa: E402
                                     detection_track, run_track, segmentation_track,
                                     tutorial_track)

DATA = osp.join(osp.dirname(ROOT), 'shared', 'data')


def track_methods(methods: list[str] | None, track: str) -> list[str] | None:
    """The keys of ``--methods`` that apply to ``track`` (``key`` or ``track:key``)."""
    if methods is None:
        return None
    return [m.split(':', 1)[-1] for m in methods if ':' not in m or m.startswith(track + ':')]


def merged_tracks(path: str, tracks: list[dict]) -> list[dict]:
    """The tracks of the study file ``path`` with ``tracks`` in place of those of the same
    name (new ones last): running one track updates the study, the others' results stay."""
    if not osp.exists(path):
        return tracks
    with open(path) as f:
        kept = json.load(f).get('tracks', [])
    new = {t['name']: t for t in tracks}
    merged = [new.pop(t['name'], t) for t in kept]
    return merged + [t for t in tracks if t['name'] in new]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tracks', nargs='+', default=['det', 'seg', 'cls'],
                        choices=['det', 'det_share', 'seg', 'cls', 'tutorial'],
                        help='det_share: the share of the balanced detection rows, chosen on '
                        'held-out training images; tutorial: the PyTorch KD tutorial (DeepNN '
                        '-> LightNN, CIFAR-10 subset); neither in the default set')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument('--methods', nargs='+', default=None,
                        help='method keys to run: "fgd" (every track that has it) or '
                             '"det:fgd" (that track only); default all')
    parser.add_argument('--work-dir', default='work_dirs/study')
    parser.add_argument('--results-dir', default=None,
                        help='where each run\'s result file and the teachers are kept (commit '
                        'them); default docs/study, <work-dir>/results with --quick')
    parser.add_argument('--data-root', default=DATA)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--reuse', action='store_true',
                        help='read back the runs (and teachers) already in --results-dir')
    parser.add_argument('--gather', action='store_true',
                        help='train nothing: summarise the finished runs in --results-dir')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--precision', default='fp32', choices=['fp32', 'fast-teacher', 'amp'],
                        help='students with the bf16 channels-last teacher, or that and bf16 '
                        'training (--amp on a CPU); runs it does not change are shared')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    results_dir = args.results_dir or (osp.join(args.work_dir, 'results') if args.quick
                                       else osp.join(ROOT, 'docs', 'study'))
    builders = dict(
        det=lambda: detection_track(osp.join(args.work_dir, 'det'), args.quick),
        det_share=lambda: detection_track(osp.join(args.work_dir, 'det'), args.quick,
                                          choose_share=True),
        seg=lambda: segmentation_track(osp.join(args.data_root, 'camvid_mini'), args.quick),
        cls=lambda: classification_track(osp.join(args.data_root, 'cifar10'), args.quick),
        tutorial=lambda: tutorial_track(osp.join(args.data_root, 'cifar10'), args.quick))
    tracks = []
    for name in args.tracks:
        track = builders[name]()
        track.precision = args.precision
        tracks.append(run_track(track, args.work_dir, args.seeds,
                                track_methods(args.methods, name), args.reuse, results_dir,
                                args.gather))
    for track in tracks:
        if track['name'] == 'det_share':
            share, means = chosen_share(track)
            track['chosen_share'] = share
            print('[study] det_share: mean paired gain on the held-out training images by share: '
                  + ', '.join(f'{k}: {v:+.2f}' for k, v in means.items())
                  + f'; chosen share {share}')
    command = 'python3 tools/analysis/distill_study.py ' + shlex.join(
        sys.argv[1:] if argv is None else argv)
    for track in tracks:
        track['command'] = command
    results = dict(tracks=tracks, seconds=time.time() - start, threads=torch.get_num_threads(),
                   quick=args.quick, machine=machine_info())
    os.makedirs(results_dir, exist_ok=True)
    study = dict(results, tracks=merged_tracks(osp.join(results_dir, 'study.json'), tracks))
    with open(osp.join(results_dir, 'study.json'), 'w') as f:
        json.dump(dict(study, command=command), f, indent=1)
    markdown = study_markdown(study, command)
    with open(osp.join(results_dir, 'study.md'), 'w') as f:
        f.write(markdown)
    plot_study(study, osp.join(results_dir, 'study.png'))
    print(markdown)
    print(f'wrote {results_dir}/study.json, study.md, study.png ({time.time() - start:.0f} s)')
    return results


if __name__ == '__main__':
    main()

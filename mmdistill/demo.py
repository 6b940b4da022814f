"""The embedded demo: distillation on a synthetic shapes set, no download, no data to prepare.

It writes a small COCO-format set (:func:`mmdistill.datasets.make_shapes_coco`), trains a
RetinaNet teacher, then a narrower RetinaNet student from the same initial weights: alone, with
the teacher's FPN and head inherited (``init_student``) and no loss, and with FGD and PKD each
with and without that inheritance. It prints each method's mAP and its gain over the right
baseline: inherit-only for the rows that inherit, the student alone for the others. It is the
detection track of :mod:`mmdistill.experiments.study` with fewer methods and one seed; the study
(``tools/analysis/distill_study.py``) gives three seeds and every method.
"""
from __future__ import annotations

import os.path as osp

import torch

from .experiments.report import plot_study, track_markdown
from .experiments.study import detection_track, run_track

DEMO_METHODS = ('fgd', 'fgd_inherit', 'pkd', 'pkd_inherit')


def run_demo(work_dir: str = 'work_dirs/demo', teacher_iters: int = 600,
             student_iters: int = 300, seeds: tuple[int, ...] = (0, ),
             methods: tuple[str, ...] = DEMO_METHODS) -> dict:
    """Run the demo; print the table, write ``demo.png`` (results, learning curve, loss curves);
    return the track's results. Progress: a bar per run on a terminal, else a line per tenth."""
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    track = detection_track(osp.join(work_dir, 'det'))
    track.teacher_iters, track.student_iters = teacher_iters, student_iters
    print(f'[demo] {track.setting}', flush=True)
    results = run_track(track, work_dir, list(seeds), list(methods))
    print('\n' + track_markdown(results))
    print('\nOne seed: the spread between seeds is as large as these gains (see the README and '
          'tools/analysis/distill_study.py for three seeds of every method).')
    path = plot_study(dict(tracks=[results]), osp.join(work_dir, 'demo.png'), losses=True)
    print(f'[demo] chart: {path}')
    return results

"""The mmdistill demo: one seed of the study's detection track beside its five (no download).

    python3 tools/demo.py [--work-dir work_dirs/demo] [--seed 0] [--workers 2] [--all-helpful]

It writes the synthetic shapes set (:func:`tools.experiments.shapes_data.make_shapes_coco`),
trains the track's teacher once (kept in the work dir for later runs), and trains the narrow
student from the seed's initial weights: alone, inheriting the teacher's FPN and head
(``init_student``) with no loss, and with the method the study found to help (the lower end of
its 95 % interval above 0; of those, the highest lower end; ``--all-helpful``: every one); when
none does, the method with the best mean, and it says so. Two
worker processes share the runs (one per core). It prints the demo's mAP and paired gain beside
the study's 5-seed mean and interval, and writes ``demo.png``.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import subprocess
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # mmengine's import
from tools.experiments.report import plot_study, track_markdown  # noqa: E402
from tools.experiments.study import detection_track, run_track  # noqa: E402

STUDY = osp.join(ROOT, 'docs', 'study')


def study_rows(study_dir: str = STUDY) -> list[dict]:
    """The detection rows of the committed study (``study.json``), or [] without one."""
    path = osp.join(study_dir, 'study.json')
    if not osp.exists(path):
        return []
    with open(path) as f:
        tracks = json.load(f)['tracks']
    return next((t['rows'] for t in tracks if t['name'] == 'det'), [])


def is_method(row: dict) -> bool:
    """A method row: not a baseline, not a control (a self-teacher's row, key ``*_self``)."""
    return row['key'] not in ('alone', 'inherit') and not row['key'].endswith('_self')


def helpful(rows: list[dict]) -> list[dict]:
    """The method rows whose paired gain has a 95 % interval above 0, the highest lower end
    first."""
    found = [r for r in rows if is_method(r) and r.get('delta_ci') and r['delta_ci'][0] > 0]
    return sorted(found, key=lambda r: -r['delta_ci'][0])


def demo_methods(rows: list[dict], all_helpful: bool = False) -> tuple[list[str], str]:
    """The methods the demo runs, and the sentence that says why: the helping method with the
    highest lower end of its interval (``all_helpful``: every helping one)."""
    found = helpful(rows)
    if found:
        shown = found if all_helpful else found[:1]
        others = '' if all_helpful or len(found) == 1 else (
            f' Also helping, not run (--all-helpful): {", ".join(r["key"] for r in found[1:])}.')
        return [r['key'] for r in shown], (
            'The study found it to help (95 % interval of the paired gain above 0 over its '
            'seeds; of those, the highest lower end).' + others)
    methods = [r for r in rows if 'delta_mean' in r and is_method(r)]
    if not methods:
        return ['fgd_inherit'], 'No study results found: FGD + inherit, its published recipe.'
    best = max(methods, key=lambda r: r['delta_mean'])
    return [best['key']], ('No method helps in the study: no 95 % interval of a paired gain is '
                           f'above 0. Shown: the best mean, {best["label"]}.')


def compare_line(demo: dict, study: dict | None) -> str:
    """'| label | demo mAP | demo Δ | study mean ± std | study Δ [95 % CI] | wins |'."""
    d = f'{demo["delta_mean"]:+.2f}' if 'delta_mean' in demo else '-'
    if study is None:
        return f'| {demo["label"]} | {demo["mean"]:.2f} | {d} | - | - | - |'
    ci = study.get('delta_ci')
    s = '-' if 'delta_mean' not in study else f'{study["delta_mean"]:+.2f}' + (
        f' [{ci[0]:+.2f}, {ci[1]:+.2f}]' if ci else '')
    wins = f'{study["wins"]}/{len(study["delta"])}' if 'wins' in study else '-'
    return (f'| {demo["label"]} | {demo["mean"]:.2f} | {d} | {study["mean"]:.2f} ± '
            f'{study["std"] or 0:.2f} | {s} | {wins} |')


def run_demo(work_dir: str = 'work_dirs/demo', seed: int = 0, workers: int = 2,
             quick: bool = False, all_helpful: bool = False) -> dict:
    """Run the demo; print the comparison with the study, write ``demo.png``; return the track's
    results. ``workers`` processes share the runs (each claims a run before training it).
    ``quick``: the track's smoke-test sizes and its own teacher (tests; numbers mean nothing)."""
    rows = study_rows()
    methods, why = demo_methods(rows, all_helpful)
    methods = ['inherit'] + [m for m in methods if m != 'inherit']  # always shown
    track = detection_track(osp.join(work_dir, 'det'), quick)
    print(f'[demo] {track.setting}', flush=True)
    track.prepare(None)  # the data set, before the workers read it
    cmd = [sys.executable, osp.abspath(__file__), '--worker', work_dir, str(seed),
           str(int(quick)), *methods]
    helpers = [subprocess.Popen(cmd) for _ in range(max(workers - 1, 0))]
    _work(work_dir, seed, quick, methods)
    for helper in helpers:
        if helper.wait() != 0:
            raise RuntimeError(f'demo worker failed: {" ".join(cmd)}')
    results = _work(work_dir, seed, quick, methods)  # gathers what the helpers trained
    study = {r['key']: r for r in rows}
    print('\n' + track_markdown(results))
    print(f'\n{why}\n\n| method | demo mAP (seed {seed}) | demo Δ | study mean ± std '
          '| study Δ [95 % CI] | seeds won |\n|---|--:|--:|--:|--:|--:|')
    for row in results['rows']:
        print(compare_line(row, study.get(row['key'])))
    print('\nOne seed on this machine: its Δ can fall anywhere in the study\'s interval or '
          'outside it (other CPUs give other numbers); the interval is the claim.')
    path = plot_study(dict(tracks=[results]), osp.join(work_dir, 'demo.png'), losses=True)
    print(f'[demo] chart: {path}')
    return results


def _work(work_dir: str, seed: int, quick: bool, methods: list[str]) -> dict:
    import torch
    torch.set_num_threads(1)
    track = detection_track(osp.join(work_dir, 'det'), quick)
    return run_track(track, work_dir, [seed], methods, reuse=True,
                     results_dir=osp.join(work_dir, 'results'))


def main() -> None:
    if sys.argv[1:2] == ['--worker']:  # a helper process of run_demo
        _work(sys.argv[2], int(sys.argv[3]), bool(int(sys.argv[4])), sys.argv[5:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=2,
                        help='processes sharing the runs (one per core)')
    parser.add_argument('--all-helpful', action='store_true',
                        help='every method the study found to help (default: the one with the '
                        'highest lower end of its interval)')
    args = parser.parse_args()
    run_demo(args.work_dir, args.seed, args.workers, all_helpful=args.all_helpful)


if __name__ == '__main__':
    main()

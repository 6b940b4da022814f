"""The distillation study: its statistics, and a quick run of all three tracks (CI smoke test)."""
import json
import os.path as osp
import statistics

import pytest

from tools.experiments.study import INHERIT, Method, claimed, paired_interval, summarise

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')


def _runs(values):
    return {seed: dict(value=v, seconds=1.0, curve=[], balance={}) for seed, v in
            enumerate(values)}


def test_summary_pairs_each_seed_with_its_baseline():
    runs = {'alone': _runs([10.0, 20.0, 30.0]), 'inherit': _runs([15.0, 18.0, 40.0]),
            'fgd_inherit': _runs([14.0, 21.0, 41.0]), 'fgd': _runs([12.0, 19.0, 33.0])}
    row = summarise(Method('+ FGD + inherit', dict(fgd={}), inherit=True), 'fgd_inherit',
                    runs['fgd_inherit'], runs)
    assert row['baseline'] == 'inherit'
    assert row['delta'] == [-1.0, 3.0, 1.0] and row['wins'] == 2
    assert row['delta_mean'] == pytest.approx(1.0)
    assert row['delta_std'] == pytest.approx(statistics.stdev([-1.0, 3.0, 1.0]))
    # 95 % t interval: 1 -+ t(0.975, 2) * 2 / sqrt(3), t = 4.303
    assert row['delta_ci'] == pytest.approx((1 - 4.303 * 2 / 3 ** 0.5, 1 + 4.303 * 2 / 3 ** 0.5))
    assert row['mean'] == pytest.approx(76 / 3)
    plain = summarise(Method('+ FGD', dict(fgd={})), 'fgd', runs['fgd'], runs)
    assert plain['baseline'] == 'alone' and plain['delta'] == [2.0, -1.0, 3.0]
    inherit = summarise(INHERIT, 'inherit', runs['inherit'], runs)
    assert inherit['baseline'] == 'alone' and inherit['delta'] == [5.0, -2.0, 10.0]
    alone = summarise(Method('student alone'), 'alone', runs['alone'], runs)
    assert alone['baseline'] is None and 'delta' not in alone


def test_interval_pairs_only_common_seeds_and_needs_two():
    runs = {'alone': _runs([10.0, 20.0, 30.0]), 'cwd': {0: _runs([11.0])[0], 2: _runs(
        [0, 0, 34.0])[2]}}
    row = summarise(Method('+ CWD', dict(cwd={})), 'cwd', runs['cwd'], runs)
    assert row['delta_seeds'] == [0, 2] and row['delta'] == [1.0, 4.0]
    assert paired_interval([2.0]) is None
    lo, hi = paired_interval([1.0, 4.0])  # t(0.975, 1) = 12.706, sd = 2.1213
    assert (lo + hi) / 2 == pytest.approx(2.5) and hi - lo == pytest.approx(
        2 * 12.706 * statistics.stdev([1.0, 4.0]) / 2 ** 0.5)


def test_a_claimed_run_is_left_to_its_live_owner_and_taken_from_a_dead_one(tmp_path):
    import socket
    import subprocess
    result = str(tmp_path / 'run.json')
    with claimed(result) as mine:
        assert mine
        with claimed(result) as again:  # this process holds it (alive): not taken twice
            assert not again
    assert not (tmp_path / 'run.json.claim').exists()
    dead = subprocess.Popen(['true'])
    dead.wait()
    (tmp_path / 'run.json.claim').write_text(f'{socket.gethostname()} {dead.pid}')
    with claimed(result) as mine:
        assert mine


def test_quick_study_writes_json_markdown_and_chart(tmp_path):
    from tools.analysis.distill_study import main
    work = str(tmp_path / 'study')
    args = ['--quick', '--seeds', '0', '1', '--methods', 'det:fgd_inherit',
            'det:pkd_inherit_auto', 'seg:cwd', 'kd', '--work-dir', work]
    main(args)
    with open(osp.join(work, 'results', 'study.json')) as f:
        results = json.load(f)
    tracks = {t['name']: t for t in results['tracks']}
    assert set(tracks) == {'det', 'seg', 'cls'}
    assert [r['key'] for r in tracks['det']['rows']] == ['alone', 'inherit', 'fgd_inherit',
                                                         'pkd_inherit_auto']
    assert [r['key'] for r in tracks['seg']['rows']] == ['alone', 'cwd']
    assert [r['key'] for r in tracks['cls']['rows']] == ['alone', 'kd']
    for track in tracks.values():
        rows = {r['key']: r for r in track['rows']}
        for row in track['rows']:
            assert row['seeds'] == [0, 1] and len(row['values']) == 2
            if row['baseline'] is not None:
                base = rows[row['baseline']]['values']
                assert row['delta'] == pytest.approx([v - b for v, b in
                                                      zip(row['values'], base)])
            if row['key'] not in ('alone', 'inherit'):  # the balance hook ran
                assert row['ratio'] is not None and row['ratio'] > 0
                assert row['grad_share'] is not None
        assert rows['alone']['curves'], 'the student-alone learning curve is recorded'
        assert track['teachers']['teacher']['curve'], 'the teacher\'s learning curve too'
    det = {r['key']: r for r in tracks['det']['rows']}
    assert det['pkd_inherit_auto']['auto_weights']['pkd'] > 0  # measured, from the checkpoint
    assert 'auto_weights' not in det['fgd_inherit']
    # each run is a small file of the results dir, the teacher's result beside them; its
    # weights stay in the work dir
    runs = osp.join(work, 'results', 'det')
    assert osp.exists(osp.join(runs, 'pkd_inherit_auto_seed1.json'))
    assert osp.exists(osp.join(runs, 'teacher.json'))
    assert osp.exists(osp.join(work, 'det', 'teacher.pth'))
    assert not osp.exists(osp.join(runs, 'teacher.pth'))
    md = open(osp.join(work, 'results', 'study.md')).read()
    assert 'python3 tools/analysis/distill_study.py --quick' in md
    assert '| + PKD + inherit (balanced, share' in md and 'inherit only' in md
    # the track's run time: every run's seconds, students and teachers, summed
    track = results['tracks'][0]
    students = sum(r['seconds'] * len(r['seeds']) for r in track['rows'])
    teachers = sum(t['seconds'] for t in track['teachers'].values())
    assert (f'Run time: {(students + teachers) / 3600:.1f} hours of one-thread runs '
            f'({sum(len(r["seeds"]) for r in track["rows"])} student runs') in md
    with open(osp.join(work, 'results', 'study.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # --gather summarises the finished runs and trains nothing (a missing seed stays missing)
    gathered = main(args[:4] + ['2'] + args[4:] + ['--gather'])
    assert [r['values'] for r in gathered['tracks'][0]['rows']] == \
        [r['values'] for r in results['tracks'][0]['rows']]
    assert not osp.exists(osp.join(work, 'results', 'det', 'alone_seed2.json'))
    # --reuse gathers the finished runs without training again
    again = main(args + ['--reuse'])
    assert again['seconds'] < results['seconds']
    assert [r['values'] for r in again['tracks'][0]['rows']] == \
        [r['values'] for r in results['tracks'][0]['rows']]
    # one track run (or gathered) alone updates that track of the study; the others stay
    one = main(args + ['--gather', '--tracks', 'seg'])
    assert [t['name'] for t in one['tracks']] == ['seg']
    with open(osp.join(work, 'results', 'study.json')) as f:
        study = json.load(f)
    assert [t['name'] for t in study['tracks']] == ['det', 'seg', 'cls']
    assert study['tracks'][0]['rows'] == json.loads(json.dumps(again['tracks'][0]['rows']))
    assert study['tracks'][1]['command'].endswith('--gather --tracks seg')
    md = open(osp.join(work, 'results', 'study.md')).read()
    assert md.count('Made by:') == 3 and '--gather --tracks seg' in md


def test_demo_runs_what_the_study_found_and_says_when_nothing_helps():
    from tools.demo import compare_line, demo_methods
    rows = [dict(key='alone', label='student alone', mean=10.0, std=1.0),
            dict(key='cwd', label='+ CWD', mean=11.0, std=1.0, delta=[1.0] * 5, wins=5,
                 delta_mean=1.0, delta_ci=(0.2, 1.8)),
            dict(key='pkd_inherit', label='+ PKD', mean=9.0, std=1.0, delta=[-1.0] * 5, wins=0,
                 delta_mean=-1.0, delta_ci=(-1.5, -0.5))]
    assert demo_methods(rows)[0] == ['cwd']
    rows += [dict(key='mgd_inherit', label='+ MGD', mean=12.0, std=1.0, delta=[2.0] * 5, wins=5,
                  delta_mean=2.0, delta_ci=(0.5, 3.5)),
             dict(key='cwd_self', label='+ CWD from self', mean=14.0, std=1.0, delta=[4.0] * 5,
                  wins=5, delta_mean=4.0, delta_ci=(3.0, 5.0))]  # a control: never shown
    keys, why = demo_methods(rows)
    assert keys == ['mgd_inherit'] and 'not run (--all-helpful): cwd.' in why
    assert demo_methods(rows, all_helpful=True)[0] == ['mgd_inherit', 'cwd']
    del rows[3:]
    rows[1]['delta_ci'] = (-0.1, 2.1)
    keys, why = demo_methods(rows)
    assert keys == ['cwd'] and why.startswith('No method helps in the study')
    line = compare_line(dict(label='+ CWD', mean=12.0, delta_mean=2.0), rows[1])
    assert line == '| + CWD | 12.00 | +2.00 | 11.00 ± 1.00 | +1.00 [-0.10, +2.10] | 5/5 |'


def test_last_quarter_change_reads_the_curve_at_three_quarters_and_the_end():
    from tools.experiments.report import last_quarter_change
    curve = [dict(iter=i * 300, value=v) for i, v in enumerate([1, 2, 3, 4, 5, 6, 7, 7.2], 1)]
    assert last_quarter_change(curve, 2400) == pytest.approx(7.2 - 6)
    assert last_quarter_change(curve[:-1], 2400) is None  # the curve stops before the end


def test_the_share_is_the_one_with_the_best_mean_gain_over_the_swept_recipes():
    from tools.experiments.study import chosen_share
    rows = [dict(key='alone'), dict(key='inherit', delta_mean=5.0),
            dict(key='fgd_inherit_share0.1', delta_mean=1.0),
            dict(key='fgd_inherit_share0.5', delta_mean=-1.0),
            dict(key='cwd_share0.1', delta_mean=-0.5), dict(key='cwd_share0.5', delta_mean=2.0)]
    share, means = chosen_share(dict(rows=rows))
    assert share == 0.5 and means == {0.1: 0.25, 0.5: 0.5}


def test_quick_demo_shares_its_runs_between_two_workers(tmp_path, capsys):
    from tools.demo import run_demo
    results = run_demo(str(tmp_path / 'demo'), workers=2, quick=True)
    keys = [r['key'] for r in results['rows']]
    assert keys[:2] == ['alone', 'inherit'] and len(keys) >= 3
    out = capsys.readouterr().out
    assert '| method | demo mAP (seed 0) |' in out and 'study Δ [95 % CI]' in out
    runs = tmp_path / 'demo' / 'results' / 'det'
    assert all((runs / f'{k}_seed0.json').exists() for k in keys)
    assert not list(runs.glob('*.claim'))
    assert (tmp_path / 'demo' / 'demo.png').exists()

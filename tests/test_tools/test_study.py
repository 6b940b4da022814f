"""The distillation study: its statistics, and a quick run of all three tracks (CI smoke test)."""
import json
import os.path as osp
import statistics

import pytest

from mmdistill.experiments.study import INHERIT, Method, summarise

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
    assert row['mean'] == pytest.approx(76 / 3)
    plain = summarise(Method('+ FGD', dict(fgd={})), 'fgd', runs['fgd'], runs)
    assert plain['baseline'] == 'alone' and plain['delta'] == [2.0, -1.0, 3.0]
    inherit = summarise(INHERIT, 'inherit', runs['inherit'], runs)
    assert inherit['baseline'] == 'alone' and inherit['delta'] == [5.0, -2.0, 10.0]
    alone = summarise(Method('student alone'), 'alone', runs['alone'], runs)
    assert alone['baseline'] is None and 'delta' not in alone


def test_quick_study_writes_json_markdown_and_chart(tmp_path):
    from tools.analysis.distill_study import main
    work = str(tmp_path / 'study')
    args = ['--quick', '--seeds', '0', '1', '--methods', 'det:fgd_inherit', 'det:pkd',
            'seg:cwd', 'kd', '--work-dir', work]
    main(args)
    with open(osp.join(work, 'study.json')) as f:
        results = json.load(f)
    tracks = {t['name']: t for t in results['tracks']}
    assert set(tracks) == {'det', 'seg', 'cls'}
    assert [r['key'] for r in tracks['det']['rows']] == ['alone', 'inherit', 'fgd_inherit',
                                                         'pkd']
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
    md = open(osp.join(work, 'study.md')).read()
    assert 'python3 tools/analysis/distill_study.py --quick' in md
    assert '| + PKD |' in md and 'inherit only' in md
    with open(osp.join(work, 'study.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # --reuse gathers the finished runs without training again
    again = main(args + ['--reuse'])
    assert again['seconds'] < results['seconds']
    assert [r['values'] for r in again['tracks'][0]['rows']] == \
        [r['values'] for r in results['tracks'][0]['rows']]

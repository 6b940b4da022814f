"""tools/analysis/benchmark_losses.py runs (quick mode: tiny sizes, 2 repeats, no timing checks)."""
from tests.test_tools.test_pipeline import run

LOSSES = ('FGD', 'FGD-eager', 'MGD', 'CWD', 'CWD-eager', 'FitNet', 'AT', 'FGD-compiled',
          'CWD-compiled', 'AT-compiled')


def test_benchmark_losses_quick():
    out = run('tools/analysis/benchmark_losses.py', '--quick', '--threads', '1', '--repeats', '2')
    assert 'Machine: CPU ' in out and 'Memory bandwidth: ' in out, out[-3000:]
    lines = out.splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith('| loss | ours ms |')]
    assert len(header) == 1, out[-3000:]
    for col in ('reference ms', 'speed-up', 'bound ms', 'ours / bound', 'S - T ms',
                'ours / (S - T), paired', 'bound target (paired)', 'f64 diff grad', 'compile s'):
        assert col in lines[header[0]]
    cells = len(lines[header[0]].strip('|').split('|'))
    rows = [line for line in lines[header[0] + 2:] if line.startswith('| ')]
    assert [row.split('|')[1].strip() for row in rows] == list(LOSSES), out[-3000:]
    assert all(len(row.strip('|').split('|')) == cells for row in rows), rows
    assert 'MISMATCH' not in out
    compile_s = [row.split('|')[-2].strip() for row in rows]
    assert all(c == '-' for c in compile_s[:7]) and all(c != '-' for c in compile_s[7:]), rows
    floor_ms = [float(row.split('|')[9]) for row in rows]
    paired = [float(row.split('|')[10].strip().rstrip('x')) for row in rows]
    assert all(t > 0 for t in floor_ms) and all(p > 0 for p in paired), rows
    bound_target = [row.split('|')[11].strip() for row in rows]
    kernels_and_compiled = [0, 3, 7, 8, 9]  # FGD and CWD: the CPU kernels
    assert all(c.startswith('<= 3x: ') == (i in kernels_and_compiled)
               for i, c in enumerate(bound_target)), rows


def test_benchmark_loss_floors_quick():
    out = run('tools/analysis/benchmark_loss_floors.py', '--quick', '--threads', '1',
              '--repeats', '2')
    assert 'Machine: CPU ' in out, out[-3000:]
    rows = [line.split('|')[1:-1] for line in out.splitlines()
            if line.startswith('| ') and not line.startswith('| pass')]
    names = [r[0].strip() for r in rows]
    assert names == ['read S', 'copy S -> G', "S - T -> G (the bound's traffic)", 'exp(S) -> G',
                     'CWD compiled: value and gradient', 'AT compiled: channel mean of S',
                     'AT compiled: gradient'], out[-3000:]
    ratios = {n: float(r[2]) for n, r in zip(names, rows)}
    assert ratios["S - T -> G (the bound's traffic)"] == 1.0
    assert all(v > 0 for v in ratios.values()), ratios

"""What the compiled CWD and AT forms cost, part by part, beside the passes no form can avoid.

``benchmark_losses.py`` compares each compiled loss with its memory-traffic bound (read S and T,
write the student gradient). This script times, on the same FPN shapes (all 5 levels, float32),
the passes that bound stands for and the arithmetic the definitions add, interleaved repeat by
repeat, so one run shows where the gap to the bound is:

* ``read S``: one read of the student maps (a sum); ``copy S -> G``: read + write;
* ``S - T -> G``: the bound's traffic itself (two maps read, one written into reused memory);
* ``exp(S) -> G``: one exponential per element (torch's vectorised ``exp``) read and written:
  CWD's softmaxes of S and T need two per element, whatever the form;
* the compiled cores: CWD's one-pass value and gradient (``channel_kl_and_grad``), AT's channel
  mean of S (forward, done for S and T) and its one-pass gradient.

    python3 tools/analysis/benchmark_loss_floors.py [--threads N] [--repeats 7] [--quick]
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import sys
from collections.abc import Callable, Sequence

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmdistill.engine.machine import machine_info, machine_line  # noqa: E402
from mmdistill.losses.fast.at import _pow_mean, _pow_mean_grad  # noqa: E402
from mmdistill.losses.fast.cwd import channel_kl_and_grad  # noqa: E402
from tools.analysis.benchmark_losses import FULL, QUICK, Timer  # noqa: E402
from tools.experiments.allocator import keep_freed_memory  # noqa: E402


def parts(cfg: dict) -> dict[str, Callable[[], object]]:
    """The timed passes over all levels of ``cfg`` (name -> function)."""
    gen = torch.Generator().manual_seed(0)
    shape = (cfg['batch'], cfg['channels'])
    maps_S = [torch.randn(*shape, h, w, generator=gen) for h, w in cfg['levels']]
    maps_T = [torch.randn(*shape, h, w, generator=gen) for h, w in cfg['levels']]
    grads = [torch.empty_like(s) for s in maps_S]
    at_grads = [torch.randn(cfg['batch'], h, w, generator=gen) for h, w in cfg['levels']]
    rows = [(s.flatten(2).flatten(0, 1), t.flatten(2).flatten(0, 1))
            for s, t in zip(maps_S, maps_T)]
    return {
        'read S': lambda: [s.sum() for s in maps_S],
        'copy S -> G': lambda: [g.copy_(s) for g, s in zip(grads, maps_S)],
        'S - T -> G (the bound\'s traffic)':
            lambda: [torch.sub(s, t, out=g) for g, s, t in zip(grads, maps_S, maps_T)],
        'exp(S) -> G': lambda: [torch.exp(s, out=g) for g, s in zip(grads, maps_S)],
        'CWD compiled: value and gradient':
            lambda: [channel_kl_and_grad(s, t, 1.0, 1.0, True, compiled=True) for s, t in rows],
        'AT compiled: channel mean of S': lambda: [_pow_mean(s, 2.0, compiled=True)
                                                    for s in maps_S],
        'AT compiled: gradient': lambda: [_pow_mean_grad(s, g, 2.0, compiled=True)
                                          for s, g in zip(maps_S, at_grads)],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--quick', action='store_true', help='tiny sizes: a smoke test')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = keep_freed_memory()
    cfg = QUICK if args.quick else FULL
    timer = Timer(torch.device('cpu'))
    fns = parts(cfg)
    for fn in fns.values():  # compile and touch every buffer first
        fn(), fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            times[name].append(timer(fn))
    medians = {name: statistics.median(t) for name, t in times.items()}
    bound = medians['S - T -> G (the bound\'s traffic)']
    print(f'Machine: {machine_line(machine_info())}')
    print(f'Shapes: batch {cfg["batch"]}, {cfg["channels"]} channels, levels '
          + ', '.join(f'{h}x{w}' for h, w in cfg['levels'])
          + f'; float32; median of {args.repeats} interleaved repeats; freed memory '
          + ('kept for reuse' if kept else 'returned (glibc not found)'))
    print('\n| pass (all levels) | ms | / (S - T -> G) |\n|---|--:|--:|')
    for name, ms in medians.items():
        print(f'| {name} | {ms:.1f} | {ms / bound:.2f} |')
    return medians


if __name__ == '__main__':
    main()

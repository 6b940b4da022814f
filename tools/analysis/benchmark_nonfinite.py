"""The cost of the non-finite check of every training step (``mmdistill.nonfinite``).

    python tools/analysis/benchmark_nonfinite.py [--steps 20] [--threads 1]

Times a distillation step of a small RetinaNet pair (FGD on the FPN levels, KD-style head loss)
with the check as it runs, and with it replaced by a no-op, interleaved on the same batch; and the
check alone on the step's losses. Prints medians and the ratio, with the CPU named.
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import sys
import tempfile
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # tests.utils
    sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper

    import mmdistill.nonfinite as nonfinite
    from mmdistill.engine.machine import machine_line
    from tests.utils import det_batch, save_teacher, tiny_retinanet
    register_all_modules()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = osp.join(tmp, 'teacher.pth')
        save_teacher(tiny_retinanet(32, 64), ckpt)
        model = MODELS.build(dict(
            type='DistillDetector', student=tiny_retinanet(16, 64),
            teacher=dict(config=dict(model=tiny_retinanet(32, 64)), checkpoint=ckpt),
            distill_losses=dict(fgd=dict(type='FGDLoss', student='neck', teacher='neck',
                                         alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4,
                                         lambda_fgd=5e-6))))
    model.init_weights()
    model.train()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=1e-3)))
    batch = det_batch(n=2, size=(256, 320))
    checked = nonfinite.all_finite

    def step(check: bool) -> float:
        nonfinite.all_finite = checked if check else (lambda values: True)
        start = time.perf_counter()
        model.train_step(batch, optim)
        return time.perf_counter() - start

    step(True)
    times = {True: [], False: []}
    for _ in range(args.steps):
        for check in (True, False):
            times[check].append(step(check))
    nonfinite.all_finite = checked
    losses = model.loss(**model.data_preprocessor(batch, True))
    alone = []
    for _ in range(200):
        start = time.perf_counter()
        checked(losses.values())
        alone.append(time.perf_counter() - start)
    with_check, without = (statistics.median(times[c]) * 1e3 for c in (True, False))
    print(machine_line())
    print(f'| step, check on (ms) | step, check off (ms) | ratio | the check alone (ms) |')
    print(f'|--:|--:|--:|--:|')
    print(f'| {with_check:.1f} | {without:.1f} | {with_check / without:.3f} | '
          f'{statistics.median(alone) * 1e3:.3f} |')


if __name__ == '__main__':
    main()

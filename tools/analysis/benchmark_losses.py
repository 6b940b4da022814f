"""Benchmark the dense distillation losses against references written the way the official code is.

Every dense loss (FGD, MGD, CWD, FitNet, AT) runs forward + backward on the shapes of a
RetinaNet-style FPN (batch 8, 256 channels, 5 levels from 100x152 down to 7x10, one loss module
per level as the wrapper builds them, 30 gt boxes per image for FGD) and is compared with a
reference written like the official code (per-image / per-box Python loops and separate fg and bg
MSE passes for yzd-v/FGD, yzd-v/MGD's ``FeatureLoss``, mmrazor's ``ChannelWiseDivergence``,
mdistiller's FitNet and ``single_stage_at_loss``; ``mmdistill.testing``, the references the tests
use). Each reference module is loaded with the state of the loss module it is compared with (its
convs, GcBlocks, regressor), so both sides compute the same function:

* the loss values and the gradients w.r.t. the student features must agree in float64, on the
  same shapes, level by level (largest relative difference <= 1e-6, as the tests require; the
  script exits with status 1 otherwise); how far the float32 results of ours and of the reference
  are from the float64 reference is printed too;
* the time of forward + backward (all 5 levels, the student features as leaf tensors that need a
  gradient, the loss modules' parameters too) is the median over warm repeats, ours and the
  reference interleaved repeat by repeat;
* the lower bound of each loss is the memory traffic that any implementation needs: read the
  student and the teacher features once and write the student gradient once
  (3 x N x C x sum(H*W) x 4 bytes in float32; parameters, boxes and the small per-image or
  per-channel vectors are left out), divided by this machine's memory bandwidth, measured here as
  the faster of a large tensor copy and a large tensor add (bytes read + bytes written per second).
  MGD (two 3x3 convs) and FitNet (a 1x1 conv + BN) are compute-bound; their conv cost at this
  machine's measured matmul rate is printed under the table as well.

    OMP_NUM_THREADS=1 python3 tools/analysis/benchmark_losses.py --quick   # seconds, tiny sizes
    python3 tools/analysis/benchmark_losses.py [--repeats 5] [--threads N] [--device cuda]
    python3 tools/analysis/benchmark_losses.py --losses FGD CWD
"""
from __future__ import annotations

import argparse
import copy
import datetime
import functools
import os.path as osp
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmdistill.engine.machine import machine_info, machine_line  # noqa: E402
from mmdistill.losses.at import ATLoss  # noqa: E402
from mmdistill.losses.cwd import CWDLoss  # noqa: E402
from mmdistill.losses.fgd import FGDLoss  # noqa: E402
from mmdistill.losses.fitnet import FitNetLoss  # noqa: E402
from mmdistill.losses.mgd import MGDLoss  # noqa: E402
from mmdistill.testing import (RefConvReg, RefFGD, RefMGD, reference_at, reference_cwd,  # noqa: E402
                               reference_fitnet)
from tools.experiments.allocator import keep_freed_memory  # noqa: E402

# (H, W) of P3..P7 (strides 8..128) of an 800x1216 batch input
FULL = dict(batch=8, channels=256, levels=[(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)],
            img_shape=(800, 1216), boxes=30, bw_mbytes=256)
QUICK = dict(batch=2, channels=16, levels=[(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)],
             img_shape=(128, 192), boxes=3, bw_mbytes=16)
TARGETS = {'FGD': 3.0, 'FGD-eager': 3.0, 'MGD': 1.0, 'CWD': 1.0, 'CWD-eager': 1.0, 'FitNet': 1.0,
           'AT': 1.0, 'FGD-compiled': 3.0, 'CWD-compiled': 1.0, 'AT-compiled': 1.0}
# the compiled forms and the CPU kernels (FGD, CWD; '-eager': without them): at most this many
# times the memory-traffic bound
BOUND_TARGETS = {'FGD': 3.0, 'CWD': 3.0, 'FGD-compiled': 3.0, 'CWD-compiled': 3.0,
                 'AT-compiled': 3.0}
# float64 agreement with the reference, as the tests require (METHODS.md: rel. 1e-6)
TOL = 1e-6


# ------------------------------------------------------------------------------------------------
# References (mmdistill.testing, shared with the tests), on copies of the loss modules' parameters
# ------------------------------------------------------------------------------------------------
def _twin(make: Callable[[nn.Module, torch.Tensor, torch.Tensor], nn.Module]) -> Callable:
    """A reference module built once per loss module (and dtype/device), loaded with its state.

    The cache holds the loss module too, so that its id is not reused; building the reference
    does not consume the global RNG (MGD's mask is drawn from it right after)."""
    twins: dict = {}

    def twin(m: nn.Module, s: torch.Tensor, t: torch.Tensor) -> nn.Module:
        key = (id(m), s.dtype, s.device)
        if key not in twins:
            with torch.random.fork_rng(devices=[]):
                ref = make(m, s, t).to(device=s.device, dtype=s.dtype)
            ref.load_state_dict(m.state_dict())
            twins[key] = (m, ref)
        ref = twins[key][1]
        ref.train(m.training)
        return ref
    return twin


_fgd_twin = _twin(lambda m, s, t: RefFGD(s.shape[1], t.shape[1], m.temp, m.alpha_fgd, m.beta_fgd,
                                         m.gamma_fgd, m.lambda_fgd))
_mgd_twin = _twin(lambda m, s, t: RefMGD(s.shape[1], t.shape[1], m.alpha_mgd, m.lambda_mgd,
                                         cls=m.mask_type == 'channel'))
_fitnet_twin = _twin(lambda m, s, t: RefConvReg(s.shape, t.shape, use_relu=m.use_relu))


def ref_fgd(m: FGDLoss, preds_S, preds_T, gt_bboxes, img_shape):
    return _fgd_twin(m, preds_S, preds_T)(preds_S, preds_T, gt_bboxes, img_shape)


def ref_mgd(m: MGDLoss, preds_S, preds_T):
    return _mgd_twin(m, preds_S, preds_T)(preds_S, preds_T)


def ref_cwd(m: CWDLoss, preds_S, preds_T):
    preds_S = m.align(preds_S) if m.align is not None else preds_S
    return reference_cwd(preds_S, preds_T, m.tau, 1.0)


def ref_fitnet(m: FitNetLoss, preds_S, preds_T):
    return reference_fitnet(_fitnet_twin(m, preds_S, preds_T), preds_S, preds_T, 1.0)


def ref_at(m: ATLoss, preds_S, preds_T):
    return reference_at(preds_S, preds_T, m.p)


# ------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    build: Callable[[int], nn.Module]          # channels -> loss module (one per level)
    ref: Callable                              # ref(module, S, T, *extra)
    extra: bool = False                        # FGD: gt boxes and img_shape
    seeded: bool = False                       # MGD: a random mask, same seed for both sides
    conv_flops: Callable[[int, int, int], float] | None = None  # (N, C, HW) -> fwd FLOPs
    compiled: bool = False                     # compiled=True: the first call's time is kept


def _fgd(c: int, compiled: bool = False, cpu_kernel: bool = True) -> FGDLoss:
    # RetinaNet settings of the official configs; the zero-initialised GcBlock convs get random
    # values (as after some training) so that every term and gradient path is non-trivial.
    m = FGDLoss(c, c, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6,
                compiled=compiled, cpu_kernel=cpu_kernel)
    with torch.no_grad():
        for block in (m.channel_add_conv_s, m.channel_add_conv_t):
            nn.init.normal_(block[-1].weight, std=0.05)
            nn.init.normal_(block[-1].bias, std=0.05)
        for conv in (m.conv_mask_s, m.conv_mask_t):
            nn.init.normal_(conv.bias, std=0.5)
    return m


CASES = [
    Case('FGD', _fgd, ref_fgd, extra=True),  # on the CPU: the hand-tiled kernel
    Case('FGD-eager', lambda c: _fgd(c, cpu_kernel=False), ref_fgd, extra=True),
    Case('MGD', lambda c: MGDLoss(c, c, alpha_mgd=2e-5, lambda_mgd=0.65), ref_mgd, seeded=True,
         conv_flops=lambda n, c, hw: 2 * (2 * n * hw * c * c * 9)),
    Case('CWD', lambda c: CWDLoss(tau=1.0), ref_cwd),  # on the CPU: the kernel
    Case('CWD-eager', lambda c: CWDLoss(tau=1.0, cpu_kernel=False), ref_cwd),
    Case('FitNet', lambda c: FitNetLoss(c, c), ref_fitnet,
         conv_flops=lambda n, c, hw: 2 * n * hw * c * c),
    Case('AT', lambda c: ATLoss(p=2), ref_at),
    Case('FGD-compiled', lambda c: _fgd(c, compiled=True, cpu_kernel=False), ref_fgd,
         extra=True, compiled=True),
    Case('CWD-compiled', lambda c: CWDLoss(tau=1.0, compiled=True, cpu_kernel=False),
         ref_cwd, compiled=True),
    Case('AT-compiled', lambda c: ATLoss(p=2, compiled=True), ref_at,
         compiled=True),
]


# ------------------------------------------------------------------------------------------------
class Timer:
    """Wall time of a callable in ms: perf_counter on the CPU, CUDA events on a GPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.device.type == 'cuda':
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(self.device)
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def measure_bandwidth(device: torch.device, mbytes: int, repeats: int,
                      timer: Timer) -> tuple[float, float]:
    """GB/s (1e9 bytes/s, read + written) of a large copy and a large add, median of repeats."""
    n = mbytes * 2**20 // 4
    a = torch.rand(n, device=device)
    b = torch.rand(n, device=device)
    c = torch.empty(n, device=device)
    result = []
    for fn, streams in ((lambda: c.copy_(a), 2), (lambda: torch.add(a, b, out=c), 3)):
        fn()
        times = [timer(fn) for _ in range(max(repeats, 3))]
        result.append(streams * n * 4 / (statistics.median(times) * 1e-3) / 1e9)
    return result[0], result[1]


def measure_matmul(device: torch.device, size: int, repeats: int, timer: Timer) -> float:
    """GFLOP/s of a square float32 matmul, median of repeats."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    times = [timer(lambda: a @ b) for _ in range(max(repeats, 3))]
    return 2 * size**3 / (statistics.median(times) * 1e-3) / 1e9


def random_boxes(n: int, img_shape: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    """``n`` xyxy boxes inside the image, 2% to 50% of its sides."""
    img_h, img_w = img_shape
    size = torch.tensor([img_w, img_h], dtype=torch.float32)
    wh = (0.02 + 0.48 * torch.rand(n, 2, generator=gen)) * size
    xy = torch.rand(n, 2, generator=gen) * (size - wh)
    return torch.cat([xy, xy + wh], dim=1)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b| (the largest difference relative to the reference's scale)."""
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item()


def run_case(case: Case, cfg: dict, device: torch.device, warmup: int, repeats: int,
             timer: Timer) -> dict:
    n, c, levels = cfg['batch'], cfg['channels'], cfg['levels']
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mods = [case.build(c).to(device) for _ in levels]
    student = [torch.randn(n, c, h, w, generator=gen).to(device).requires_grad_()
               for h, w in levels]
    teacher = [(torch.randn(n, c, h, w, generator=gen) * 1.5 + 0.3).to(device)
               for h, w in levels]
    extra = ()
    if case.extra:
        boxes = [random_boxes(cfg['boxes'], cfg['img_shape'], gen).to(device) for _ in range(n)]
        extra = (boxes, cfg['img_shape'])

    def ours(m, s, t, *e):
        return m(s, t, *e)

    def step(fn: Callable, mods=mods, student=student, teacher=teacher, extra=extra,
             first_level: int = 0) -> torch.Tensor:
        for s in student:
            s.grad = None
        for m in mods:
            m.zero_grad(set_to_none=True)
        loss = 0
        for k, (m, s, t) in enumerate(zip(mods, student, teacher), start=first_level):
            if case.seeded:  # the same random mask for ours and the reference, level by level
                torch.manual_seed(1234 + k)
            loss = loss + fn(m, s, t, *extra)
        loss.backward()
        return loss.detach()

    def run_both(mods, student, teacher, extra, first_level=0):
        """Loss and student gradients of ours, then of the reference (same inputs, seed)."""
        run = functools.partial(step, mods=mods, student=student, teacher=teacher, extra=extra,
                                first_level=first_level)
        loss_ours = run(ours)
        grads_ours = [s.grad.clone() for s in student]
        loss_ref = run(case.ref)
        return (loss_ours, grads_ours), (loss_ref, [s.grad.clone() for s in student])

    # a compiled loss compiles its forward and backward on the first call (every level shares
    # one graph: dynamic shapes); that call's time is the compile time
    first = timer(lambda: step(ours)) if case.compiled else None
    # float32, the timed setting
    (l32_ours, g32_ours), (l32_ref, g32_ref) = run_both(mods, student, teacher, extra)
    # float64 (copies of the same modules), level by level: ours against the reference (the
    # equality that the tests require), and how far each float32 result is from the float64
    # reference (float32 sums of millions of terms; FGD's |S_s - S_t| can also flip its sign on
    # a near-tie, which changes a few gradient entries)
    d64, err32_ours, err32_ref = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
    l64_ref = 0.0
    for k, (m, s, t) in enumerate(zip(mods, student, teacher)):
        e64 = (([b.double() for b in extra[0]], extra[1])) if extra else ()
        (lo, go), (lr, gr) = run_both([copy.deepcopy(m).double()],
                                      [s.detach().double().requires_grad_()], [t.double()], e64,
                                      first_level=k)
        l64_ref += lr.item()
        d64 = [max(d64[0], rel_diff(lo, lr)), max(d64[1], rel_diff(go[0], gr[0]))]
        err32_ours[1] = max(err32_ours[1], rel_diff(g32_ours[k], gr[0]))
        err32_ref[1] = max(err32_ref[1], rel_diff(g32_ref[k], gr[0]))
        del go, gr
    l64_ref = torch.tensor(l64_ref, dtype=torch.float64)
    err32_ours[0], err32_ref[0] = rel_diff(l32_ours, l64_ref), rel_diff(l32_ref, l64_ref)
    del g32_ours, g32_ref

    # the bound's traffic on the same tensors at the same moment: S - T -> G, every level, timed
    # right before each repeat (the machine's bandwidth moves between runs by up to 2x, and
    # with where the tensors lie)
    outs = [torch.empty_like(s) for s in student]

    def bound_traffic():
        for s, t, o in zip(student, teacher, outs):
            torch.sub(s.detach(), t, out=o)

    t_ours, t_ref, t_bound = [], [], []
    for i in range(warmup + repeats):  # interleaved, so that a noisy neighbour hits all
        floor_ms = timer(bound_traffic)
        ours_ms = timer(lambda: step(ours))
        ref_ms = timer(lambda: step(case.ref))
        if i >= warmup:
            t_ours.append(ours_ms)
            t_ref.append(ref_ms)
            t_bound.append(floor_ms)
    del outs
    numel = n * c * sum(h * w for h, w in levels)
    flops = case.conv_flops(n, c, numel // (n * c)) * 3 if case.conv_flops else None
    return dict(name=case.name, ours=statistics.median(t_ours), ref=statistics.median(t_ref),
                paired=statistics.median(o / f for o, f in zip(t_ours, t_bound)),
                bound_traffic=statistics.median(t_bound),
                d64=d64, err32_ours=err32_ours, err32_ref=err32_ref, bytes=3 * numel * 4,
                flops=flops, first=first)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes (batch 2, 16 channels, 5 small levels), 2 repeats: a '
                        'smoke test, the times mean nothing')
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed repeats after the warm-up (default 5, --quick 2)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed repeats first')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s default)')
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help='keep_freed_memory (glibc keeps freed blocks for reuse) instead of '
                        "the system's default (large blocks mapped afresh each time)")
    parser.add_argument('--losses', nargs='+', default=[c.name for c in CASES],
                        choices=[c.name for c in CASES], metavar='LOSS',
                        help='subset of ' + ' '.join(c.name for c in CASES))
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available')
    device = torch.device(args.device)
    cfg = QUICK if args.quick else FULL
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    timer = Timer(device)

    print(f'# Dense losses, forward + backward ({"quick" if args.quick else "full"} sizes), '
          f'{datetime.date.today().isoformat()}')
    print(f'Machine: {machine_line(machine_info(device.type))}')
    levels = ', '.join(f'{h}x{w}' for h, w in cfg['levels'])
    print(f'Shapes: batch {cfg["batch"]}, {cfg["channels"]} channels, levels {levels} '
          f'(one loss module per level), FGD: {cfg["boxes"]} boxes per image on '
          f'{cfg["img_shape"][0]}x{cfg["img_shape"][1]}; float32; median of {repeats} repeats '
          f'after {args.warmup} warm-up')
    # the bandwidth, before the allocator is set: in freshly mapped memory, where this machine
    # streams fastest (the bound is then the lowest); measured again after the losses
    bw_copy, bw_add = measure_bandwidth(device, cfg['bw_mbytes'], repeats, timer)
    kept = args.keep_freed_memory and keep_freed_memory()
    bandwidth = max(bw_copy, bw_add)
    mm_size = 512 if args.quick else (8192 if device.type == 'cuda' else 2048)
    gflops = measure_matmul(device, mm_size, repeats, timer)
    print('Allocator: ' + ('freed memory kept for reuse (--keep-freed-memory)' if kept
                           else "the system's malloc as it is"))
    print(f'Memory bandwidth: {bandwidth:.1f} GB/s (copy {bw_copy:.1f}, add {bw_add:.1f}; '
          f'{cfg["bw_mbytes"]} MiB tensors, bytes read + written); matmul {gflops:.0f} GFLOP/s')
    sys.stdout.flush()

    rows = []
    for case in CASES:
        if case.name in args.losses:
            rows.append(run_case(case, cfg, device, args.warmup, repeats, timer))

    bw_end = max(measure_bandwidth(device, cfg['bw_mbytes'], repeats, timer))
    bandwidth = max(bandwidth, bw_end)
    print(f'Memory bandwidth after the losses: {bw_end:.1f} GB/s; the bound uses the larger, '
          f'{bandwidth:.1f} GB/s')
    print()
    print('| loss | ours ms | reference ms | speed-up | target | met | bound ms | ours / bound '
          '| S - T ms | ours / (S - T), paired | bound target (paired) | f64 diff loss '
          '| f64 diff grad | f32 err ours loss | f32 err ours grad | f32 err ref loss '
          '| f32 err ref grad | compile s |')
    print('|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|')
    failed = []
    for r in rows:
        speedup = r['ref'] / r['ours']
        target = TARGETS[r['name']]
        met = 'yes' if speedup >= target else ('par (within 3%)' if speedup >= 0.97 * target
                                                else 'NO')
        bound = r['bytes'] / (bandwidth * 1e9) * 1e3
        compile_s = '-' if r['first'] is None else f'{r["first"] / 1e3:.1f}'
        over = r['ours'] / bound
        cap = BOUND_TARGETS.get(r['name'])
        bound_met = ('-' if cap is None
                     else f'<= {cap:g}x: {"yes" if r["paired"] <= cap else "NO"}')
        print(f'| {r["name"]} | {r["ours"]:.1f} | {r["ref"]:.1f} | {speedup:.2f}x | '
              f'>= {target:g}x | {met} | {bound:.2f} | {over:.1f}x | {r["bound_traffic"]:.2f} | '
              f'{r["paired"]:.1f}x | '
              f'{bound_met} | '
              f'{r["d64"][0]:.0e} | {r["d64"][1]:.0e} | {r["err32_ours"][0]:.0e} | '
              f'{r["err32_ours"][1]:.0e} | {r["err32_ref"][0]:.0e} | {r["err32_ref"][1]:.0e} | '
              f'{compile_s} |')
        if not (r['d64'][0] <= TOL and r['d64'][1] <= TOL):
            failed.append(r['name'])
    print()
    numel_mb = rows[0]['bytes'] / 3 / 2**20 if rows else 0
    print(f'ours, reference: forward + backward of all {len(cfg["levels"])} levels, median ms. '
          f'bound: read the student + read the teacher + write the student gradient, '
          f'3 x {numel_mb:.1f} MiB in float32, at {bandwidth:.1f} GB/s (the largest measured: the '
          f'strictest bound). S - T: the bound\'s traffic done by torch (S - T written to a third '
          f'tensor) on the same tensors, timed right before each repeat; paired: the median '
          f'over repeats of ours / that time, the ratio the bound target is judged on. '
          f'f64 diff: '
          f'max|ours - ref| / max|ref| of the loss and of the student-feature gradients (largest '
          f'over levels), ours vs the reference in float64, must be <= {TOL:g}. f32 err: the '
          f'same for the float32 results of the timed runs, ours and the reference\'s, against '
          f'the float64 reference. compile s: the first forward + backward of a compiled loss '
          f'(compiling included), in seconds.'
          + (' --quick: tiny sizes, the times and targets mean nothing.' if args.quick else ''))
    for r in rows:
        if r['flops']:
            ms = r['flops'] / (gflops * 1e9) * 1e3
            print(f'{r["name"]}: its convs alone are {r["flops"] / 1e9:.3g} GFLOP forward + '
                  f'backward, {ms:.3g} ms at the measured matmul rate: compute-bound, ours is '
                  f'{r["ours"] / ms:.1f}x that.')
    if failed:
        print(f'MISMATCH: {", ".join(failed)} differ from the reference by more than {TOL:g} '
              f'in float64')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

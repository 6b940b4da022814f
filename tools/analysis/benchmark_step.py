"""Time and measure one distillation step against its parts, on the same batch, interleaved.

    python tools/analysis/benchmark_step.py CONFIG [--repeats 5] [--device cpu|cuda]
        [--shape H W] [--batch N] [--random-teacher] [--fast-teacher auto|bf16|fp16]
        [--cfg-options k=v ...]

(a) the student's own training step, (b) the teacher's no-grad forward as far as its taps,
(c) the full distillation step; then the fast paths: (b') the teacher as ``--fast-teacher``
runs it (``teacher_autocast``; default ``'auto'``: bf16 or fp16 and channels-last where the
device runs them natively, else fp32), (d) the step with that teacher, (e) the step with that
teacher and the student as ``--amp`` trains it on this device (fp32 where bf16 is emulated);
and each distillation loss with the fast teacher against the fp32 one. Prints the machine (CPU,
vector extensions, torch's kernel level, which precisions are native or emulated), medians,
each step over (a) + (b), peak memory of each (CUDA max allocated on a GPU, RSS growth on the
CPU) and c / (a + teacher weights + teacher taps).
``--random-teacher`` builds the teacher with its own random init (no checkpoint needed).
Detection configs only: the batch is synthetic (random pixels, 20 boxes per image).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import os.path as osp
import statistics
import sys
import tempfile
import threading
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # tools.experiments
    sys.path.insert(0, ROOT)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the config\'s Resize scale)')
    parser.add_argument('--batch', type=int, help='images per step (default: the config\'s)')
    parser.add_argument('--random-teacher', action='store_true')
    parser.add_argument('--fast-teacher', default='auto', choices=['auto', 'bf16', 'fp16'],
                        help="the fast teacher's teacher_autocast (channels-last with a reduced "
                        "precision); 'auto': what this device runs natively")
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help='keep_freed_memory (glibc keeps freed blocks for reuse) instead of '
                        "the system's default (large blocks mapped afresh each time)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def _rss() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class PeakMemory:
    """Peak memory growth of a block: CUDA max allocated, or on the CPU sampled RSS (the system's
    malloc) or sampled heap in use (``keep_freed_memory``, whose kept pages RSS would count)."""

    #: the CPU measure: RSS, or glibc's heap in use (set by main)
    sample = staticmethod(_rss)

    def __init__(self, device: str) -> None:
        self.device, self.peak = device, 0

    def __enter__(self) -> 'PeakMemory':
        if self.device == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._max = self.sample()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.0005):
            self._max = max(self._max, self.sample())

    def __exit__(self, *exc) -> None:
        if self.device == 'cuda':
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, self.sample()) - self._base


def synthetic_batch(n: int, shape: tuple[int, int], num_classes: int, seed: int = 0) -> dict:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        xy = torch.rand(20, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(20, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, num_classes, (20,), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _input_shape(cfg: Config) -> tuple[int, int]:
    for step in cfg.train_dataloader.dataset.get('pipeline', []):
        if step.get('type') in ('Resize', 'RandomResize') and 'scale' in step:
            w, h = step['scale']
            return (h, w)
    return (800, 1333)


def _strip_pretrained(model_cfg: dict) -> None:
    for part in model_cfg.values():
        if isinstance(part, dict) and 'init_cfg' in part:
            part['init_cfg'] = None


def _timed(fn, device: str, memory: bool = True) -> tuple[float, int]:
    """Seconds of ``fn()`` and its peak memory growth (0 when ``memory`` is False)."""
    mem = PeakMemory(device) if memory else None
    with mem or contextlib.nullcontext():
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return elapsed, mem.peak if mem else 0


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import MODELS

    import mmdistill  # noqa: F401
    from mmdistill.engine.machine import machine_info, machine_line
    from mmdistill.engine.precision import amp_optim_wrapper
    from tools.experiments.allocator import heap_in_use, keep_freed_memory
    kept = args.device == 'cpu' and args.keep_freed_memory and keep_freed_memory()
    if kept and heap_in_use() is not None:
        PeakMemory.sample = staticmethod(heap_in_use)
    if 'config' not in (cfg.model.get('teacher') or {}):
        raise SystemExit('benchmark_step.py measures one trained teacher: '
                         'model.teacher=dict(config=..., checkpoint=...)')
    _strip_pretrained(cfg.model.student)
    tmp = tempfile.TemporaryDirectory()
    if args.random_teacher or not os.path.isfile(str(cfg.model.teacher.checkpoint)):
        from mmdistill.teacher import load_teacher_config, model_config
        t_cfg = model_config(load_teacher_config(cfg.model.teacher.config, 'model.teacher.config'))
        _strip_pretrained(t_cfg)
        teacher = MODELS.build(t_cfg)
        teacher.init_weights()  # its own init (zero-init residuals): finite features
        path = os.path.join(tmp.name, 'teacher.pth')
        torch.save({'state_dict': teacher.state_dict()}, path)
        cfg.model.teacher.checkpoint = path
        del teacher
    model = MODELS.build(cfg.model).to(args.device)
    model.train()
    optim_cfg = cfg.optim_wrapper.copy()
    optim_cfg.pop('type', None)
    distill_optim = build_optim_wrapper(model, optim_cfg)
    student_optim = build_optim_wrapper(model.student, optim_cfg)

    shape = tuple(args.shape) if args.shape else _input_shape(cfg)
    n = args.batch or cfg.train_dataloader.batch_size
    num_classes = model.student.bbox_head.num_classes
    batch = synthetic_batch(n, shape, num_classes)
    processed = model.data_preprocessor(synthetic_batch(n, shape, num_classes), True)

    from mmengine.registry import OPTIM_WRAPPERS
    amp_type, amp_reason = amp_optim_wrapper(args.device)
    amp_optim = distill_optim if amp_type is None else OPTIM_WRAPPERS.build(
        dict(type=amp_type, optimizer=distill_optim.optimizer,
             **(dict(loss_scale='dynamic') if amp_type == 'AmpOptimWrapper' else {})))
    amp_channels_last = amp_type == 'BF16OptimWrapper'  # as use_amp sets it
    teacher = model.teacher
    fast = args.fast_teacher
    teacher.configure(fast)
    fast_precision = teacher.precision
    fast_name = (f"'{fast}': {fast_precision.describe()}"
                 + (' (emulated)' if fast_precision.emulated else ''))
    amp_name = ('fp32 student: ' + amp_reason if amp_type is None else
                f'{amp_type} student' + (' channels-last' if amp_channels_last else ''))

    def mode(fast_teacher: bool, fast_student: bool = False) -> None:
        """Teacher: fp32 contiguous, or ``--fast-teacher``; student: fp32 contiguous, or as
        ``--amp`` trains it here (with ``amp_optim``)."""
        teacher.configure(fast if fast_teacher else None, None if fast_teacher else False)
        model.student.to(memory_format=torch.channels_last if fast_student and amp_channels_last
                         else torch.contiguous_format)

    def student_step():
        model.student.train_step(batch, student_optim)

    def teacher_forward():
        with teacher.recorder.recording():
            teacher.run(processed['inputs'], processed['data_samples'])

    def distill_step(optim):
        return lambda: model.train_step(batch, optim)

    taps_bytes = 0
    mode(False)
    with teacher.recorder.recording():
        teacher.run(processed['inputs'], processed['data_samples'])
        for entry in model.entries:
            for tap in entry.teacher_taps:
                taps_bytes += sum(t.numel() * t.element_size()
                                  for t in teacher.recorder.get(tap, entry.key))
    teacher_bytes = teacher.weight_bytes

    def distill_losses(fast_teacher: bool) -> dict[str, float]:
        mode(fast_teacher)
        torch.manual_seed(0)
        with torch.no_grad():
            losses = model.loss(processed['inputs'], processed['data_samples'])
        return {k: float(sum(v) if isinstance(v, (list, tuple)) else v)
                for k, v in losses.items() if k.startswith('loss_') and
                k[len('loss_'):] in {e.name for e in model.entries}}

    # before any step changes the student (random batches can make its weights diverge)
    ref, fast_losses = distill_losses(False), distill_losses(True)
    # phase: ((fast teacher, fast student), what is timed); the mode is set outside the timing
    phases = dict(a=((False, False), student_step), b=((False, False), teacher_forward),
                  b_fast=((True, False), teacher_forward),
                  c=((False, False), distill_step(distill_optim)),
                  d=((True, False), distill_step(distill_optim)),
                  e=((True, True), distill_step(amp_optim)))
    for _ in range(args.warmup):
        for setting, fn in phases.values():
            mode(*setting)
            fn()
    times = {k: [] for k in phases}
    mems = {k: [] for k in phases}
    for _ in range(args.repeats):
        for key, (setting, fn) in phases.items():  # interleaved: a, b, ..., e, a, b, ...
            mode(*setting)
            # glibc's heap statistics take the allocator's lock: sampled in separate runs
            t, m = _timed(fn, args.device, memory=PeakMemory.sample is not heap_in_use)
            times[key].append(t)
            mems[key].append(m)
    if PeakMemory.sample is heap_in_use:
        for key, (setting, fn) in phases.items():
            mode(*setting)
            mems[key] = [_timed(fn, args.device)[1]]
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    peak = {k: max(v) / 2**20 for k, v in mems.items()}
    device = machine_line(machine_info(args.device))
    mem_kind = ('CUDA max allocated' if args.device == 'cuda' else
                'heap in use growth' if PeakMemory.sample is heap_in_use else 'RSS growth')
    print(f'\n{os.path.basename(args.config)}: batch {n} x {shape[0]}x{shape[1]}, '
          f'{args.repeats} interleaved repeats after {args.warmup} warm-up; {device}; '
          'allocator: '
          + ('freed memory kept (keep_freed_memory)' if kept else "the system's malloc"))
    print(f'| phase | median ms | peak MiB ({mem_kind}) | / (a + b) |')
    print('|---|---:|---:|---:|')
    names = {'a': '(a) student step (fp32)', 'b': '(b) teacher forward to taps (fp32)',
             'b_fast': f'(b\') teacher forward, {fast_name}',
             'c': '(c) distillation step, fp32 teacher',
             'd': f'(d) distillation step, teacher {fast_name}',
             'e': f'(e) distillation step, both fast (teacher {fast_name}; --amp: {amp_name})'}
    base = med['a'] + med['b']
    for key in phases:
        speedup = med['b'] / med['b_fast']
        ratio = f'{med[key] / base:.3f}' if key in 'cde' else '' if key != 'b_fast' else \
            f'{speedup:.2f}x faster' if speedup >= 1 else f'{1 / speedup:.2f}x slower'
        print(f'| {names[key]} | {med[key]:.1f} | {peak[key]:.1f} | {ratio} |')
    budget = peak['a'] + (teacher_bytes + taps_bytes) / 2**20
    print(f'| c / (a + teacher weights {teacher_bytes / 2**20:.1f} MiB + taps '
          f'{taps_bytes / 2**20:.1f} MiB) | | {peak["c"] / budget:.3f} | |')
    print('\nratios: the step over (a) + (b), the fp32 student step and fp32 teacher forward.')
    print(f'\n| distillation loss | fp32 teacher | teacher {fast_name} | rel. diff |')
    print('|---|--:|--:|--:|')
    for name, value in ref.items():
        diff = abs(fast_losses[name] - value) / max(abs(value), 1e-12)
        print(f'| {name} | {value:.6g} | {fast_losses[name]:.6g} | {100 * diff:.2f} % |')
    tmp.cleanup()


if __name__ == '__main__':
    main()

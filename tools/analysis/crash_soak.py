"""Crash soak: SIGKILL a short distillation run N times, resume it each time, compare the result
with the uninterrupted run.

    python tools/analysis/crash_soak.py [--kills 6] [--seed 0] [--work-dir DIR] [--quick]

The run is the exact-resume test's CIFAR-10 config (``tests/data/resume_kd-crd-mgd_cifar10.py``:
KD, DKD, CTKD, CRD, MGD from a trained teacher, random crops and flips) plus an EMA teacher of
the student with its own KD entry, on ``../shared/data/cifar10``; a checkpoint every iteration,
validation every 3. It trains once uninterrupted, then again under ``tools/train.py
--resume`` with N SIGKILLs, each at a kill point drawn from the seed, reached by watching the
process's log and the work dir (polled every millisecond):

* ``step``: once the checkpoint of an iteration is committed (``last_checkpoint`` names it),
  after a random part of the shortest step's time: during the next training step;
* ``checkpoint``: once the log says ``Saving checkpoint at k`` and a file of that checkpoint
  (``iter_k.pth`` or its temporary ``iter_k.pth.tmp``) appears on disk: during the write;
* ``validation``: at the first ``Iter(val)`` line: during validation.

After each kill it records what the process was doing (its last log line and the checkpoint
files on disk) and resumes. It checks that every resume succeeds from the newest checkpoint that
loads, and that the final checkpoint's weights (student, loss modules, EMA teacher) are
bit-identical to the uninterrupted run's. Prints a table; exit status 1 on any failure.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import os.path as osp
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

BASE_CONFIG = osp.join(ROOT, 'tests', 'data', 'resume_kd-crd-mgd_cifar10.py')
KILL_POINTS = ('step', 'checkpoint', 'validation')
VAL_INTERVAL = 3
POLL_S = 0.001
TRAIN_LINE = re.compile(r'Iter\(train\) \[\s*(\d+)/')
SAVE_LINE = re.compile(r'Saving checkpoint at (\d+) iterations')
VAL_LINE = re.compile(r'Iter\(val\) \[\s*(\d+)/(\d+)\]\s+eta')
RESUMED_LINE = re.compile(r'Auto resumed from the latest checkpoint (\S+)\.')


def soak_config(work_dir: str, teacher: str) -> str:
    """Write the soak's config (the resume test's, plus an EMA teacher) into ``work_dir``."""
    entries = ('kd', 'dkd', 'ctkd', 'crd', 'mgd')
    path = osp.join(work_dir, 'crash_soak_config.py')
    with open(path, 'w') as f:
        f.write(f"""_base_ = [{BASE_CONFIG!r}]
model = dict(
    teacher=None,
    teachers=dict(trained=dict(config=dict(model={{{{_base_.model.teacher.config.model}}}}),
                               checkpoint={teacher!r}),
                  ema=dict(ema=dict(momentum=0.01))),
    distill_losses=dict(
        {', '.join(f"{e}=dict(teacher_name='trained')" for e in entries)},
        ema_kd=dict(type='KDLoss', student='head', teacher='head', teacher_name='ema',
                    temperature=4.0, loss_weight=0.5)))
default_hooks = dict(checkpoint=dict(interval=1))
train_cfg = dict(val_interval={VAL_INTERVAL})
""")
    return path


@dataclass
class Kill:
    """One SIGKILL: where it was aimed and what the process was doing when it landed."""
    point: str
    target_iter: int
    resumed_from: str = '-'
    happened: str = ''
    newest_loadable: int = 0
    committed: int = 0


@dataclass
class Attempt:
    """One training process and the log it writes."""
    proc: subprocess.Popen
    log_path: str
    lines: list[str] = field(default_factory=list)
    _pos: int = 0

    def read(self) -> list[str]:
        """The log lines written since the last call."""
        with open(self.log_path, 'rb') as f:
            f.seek(self._pos)
            data = f.read()
        cut = data.rfind(b'\n') + 1
        self._pos += cut
        new = data[:cut].decode(errors='replace').splitlines()
        self.lines += new
        return new


def train(config: str, work_dir: str, log_path: str, resume: bool,
          extra: list[str]) -> Attempt:
    """Start ``tools/train.py`` (one thread), its output to ``log_path``."""
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir]
    if resume:
        cmd.append('--resume')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    log = open(log_path, 'w')
    proc = subprocess.Popen(cmd + ['--cfg-options', *extra], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    log.close()
    return Attempt(proc, log_path)


def committed_iter(work_dir: str) -> int:
    """The iteration ``last_checkpoint`` names (0: none)."""
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            m = re.search(r'iter_(\d+)\.pth$', f.read().strip())
    except FileNotFoundError:
        return 0
    return int(m.group(1)) if m else -1


def loads(path: str) -> bool:
    """Whether ``path`` is a checkpoint torch can load."""
    import torch
    try:
        torch.load(path, map_location='cpu', weights_only=False)
        return True
    except Exception:
        return False


def newest_loadable(work_dir: str) -> int:
    """The newest ``iter_k.pth`` in ``work_dir`` that loads (0: none)."""
    its = sorted((int(m.group(1)), p) for p in glob.glob(osp.join(work_dir, 'iter_*.pth'))
                 if (m := re.search(r'iter_(\d+)\.pth$', p)))
    for it, path in reversed(its):
        if loads(path):
            return it
    return 0


def wait_and_kill(attempt: Attempt, kill: Kill, work_dir: str, start_iter: int, step_s: float,
                  rng: random.Random) -> bool:
    """Watch ``attempt`` (started from iteration ``start_iter``) until ``kill``'s point is
    reached at or after its target iteration and SIGKILL it; False if the process ended
    first."""
    saving = None
    while attempt.proc.poll() is None:
        for line in attempt.read():
            m = SAVE_LINE.search(line)
            if m and int(m.group(1)) >= kill.target_iter:
                saving, saving_since = int(m.group(1)), time.time()
            if kill.point == 'validation' and VAL_LINE.search(line) and committed_iter(
                    work_dir) >= kill.target_iter:
                attempt.proc.send_signal(signal.SIGKILL)
                return True
        if kill.point == 'checkpoint' and saving is not None:
            name = osp.join(work_dir, f'iter_{saving}.pth')
            if any(osp.exists(p) and osp.getsize(p) > 0 and osp.getmtime(p) >= saving_since - 1
                   for p in (name + '.tmp', name)):  # not a file left by an earlier kill
                attempt.proc.send_signal(signal.SIGKILL)
                return True
        if kill.point == 'step':
            done = committed_iter(work_dir)
            if done > start_iter and done >= kill.target_iter and done % VAL_INTERVAL:
                time.sleep(rng.uniform(0.0, 1.0) * step_s)
                attempt.proc.send_signal(signal.SIGKILL)
                return True
        time.sleep(POLL_S)
    return False


def what_happened(lines: list[str], work_dir: str) -> str:
    """What the killed process was doing: its last log event and the checkpoints on disk."""
    events = [line for line in lines
              if TRAIN_LINE.search(line) or SAVE_LINE.search(line) or VAL_LINE.search(line)]
    committed = committed_iter(work_dir)
    if not events:
        return f'start-up (before step {committed + 1})'
    last = events[-1]
    if m := SAVE_LINE.search(last):
        k = int(m.group(1))
        if committed == k:
            if k % VAL_INTERVAL == 0:
                return f'between checkpoint {k} and validation'
            return f'step {k + 1}'
        path = osp.join(work_dir, f'iter_{k}.pth')
        if osp.exists(path + '.tmp'):
            state = f'{path}.tmp partial, {osp.getsize(path + ".tmp")} bytes'
        elif osp.exists(path):
            complete = 'loads' if loads(path) else 'does not load'
            state = f'iter_{k}.pth {osp.getsize(path)} bytes, {complete}'
        else:
            state = 'serialising, nothing on disk yet'
        return f'checkpoint {k} write ({osp.basename(state)})'
    if m := VAL_LINE.search(last):
        return f'validation after iter {committed} (batch {m.group(1)}/{m.group(2)} done)'
    k = int(TRAIN_LINE.search(last).group(1))
    return f'after step {k}, before its checkpoint'


def compare(straight: str, killed: str) -> dict[str, tuple[int, int]]:
    """``{group: (bit-identical tensors, tensors)}`` of the two final checkpoints' state dicts,
    grouped by the first key component (student, distill_losses, teachers, ...)."""
    import torch
    a, b = (torch.load(p, map_location='cpu', weights_only=False)['state_dict']
            for p in (straight, killed))
    if a.keys() != b.keys():
        return {'keys differ': (0, len(a.keys() ^ b.keys()))}
    out: dict[str, list[int]] = {}
    for key in a:
        group = '.'.join(key.split('.')[:2]) if key.startswith('teachers.') else key.split('.')[0]
        same, total = out.setdefault(group, [0, 0])
        out[group] = [same + int(a[key].dtype == b[key].dtype and torch.equal(a[key], b[key])),
                      total + 1]
    return {k: tuple(v) for k, v in out.items()}


def plan(kills: int, max_iters: int, rng: random.Random) -> list[Kill]:
    """Kill points (each kind once in a drawn order, then drawn) at increasing target
    iterations spread over the run."""
    points = rng.sample(KILL_POINTS, min(kills, len(KILL_POINTS)))
    points += [rng.choice(KILL_POINTS) for _ in range(kills - len(points))]
    out, last = [], 1  # from iteration 2: every resume has a checkpoint to resume from
    for i, point in enumerate(points):
        room = (max_iters - 1 - last) // (kills - i)
        target = last + rng.randint(1, max(room, 1))
        if point == 'validation':  # the first validation at or after the target
            target = min(-(-target // VAL_INTERVAL) * VAL_INTERVAL, max_iters)
        elif point == 'step' and target % VAL_INTERVAL == 0:  # a step not after validation
            target = target + 1 if target + 1 < max_iters else target - 1
        out.append(Kill(point, target))
        last = target
    return out


def shortest_step_s(lines: list[str]) -> float:
    """The shortest ``time`` of the training iterations in a log (a kill point drawn within it
    after a checkpoint lands in the next step)."""
    return min(float(m.group(1)) for line in lines
               if TRAIN_LINE.search(line) and (m := re.search(r'\btime: ([\d.]+)', line)))


def resumed_from(lines: list[str]) -> str:
    """The checkpoint a run's log says it resumed from ('None': none found, a fresh start;
    '-': the log does not say)."""
    return next((osp.basename(m.group(1)) for line in lines
                 if (m := RESUMED_LINE.search(line))), '-')


def checkpoint_name(it: int) -> str:
    """``iter_<it>.pth``; 'None' for 0 (no checkpoint, as mmengine's resume log says)."""
    return f'iter_{it}.pth' if it else 'None'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--kills', type=int, default=6, help='number of SIGKILLs (default 6)')
    parser.add_argument('--iters', type=int, default=12, help='training iterations (default 12)')
    parser.add_argument('--seed', type=int, default=0, help='draws the kill points and delays')
    parser.add_argument('--work-dir', help='default: a new temporary directory')
    parser.add_argument('--quick', action='store_true', help='CI: 3 kills, 8 iterations')
    args = parser.parse_args()
    if args.quick:
        args.kills, args.iters = 3, 8
    from mmengine.config import Config

    from tests.utils import save_teacher
    root = args.work_dir or tempfile.mkdtemp(prefix='crash_soak_')
    os.makedirs(root, exist_ok=True)
    teacher = osp.join(root, 'teacher.pth')
    with contextlib.redirect_stdout(io.StringIO()):  # the teacher's initialisation log
        save_teacher(Config.fromfile(BASE_CONFIG).model.teacher.config.model, teacher,
                     scope='mmpretrain')
    config = soak_config(root, teacher)
    extra = [f'train_cfg.max_iters={args.iters}', f'randomness.seed={args.seed}']
    straight, killed = osp.join(root, 'straight'), osp.join(root, 'killed')

    ref = train(config, straight, osp.join(root, 'straight.log'), False, extra)
    if ref.proc.wait() != 0:
        print(open(ref.log_path).read()[-3000:])
        return 1
    ref.read()
    step_s = shortest_step_s(ref.lines)
    rng = random.Random(args.seed)
    kills = plan(args.kills, args.iters, rng)

    ok, previous = True, None
    for i, kill in enumerate(kills + [None]):
        attempt = train(config, killed, osp.join(root, f'killed_{i}.log'), previous is not None,
                        extra)
        if kill is None:
            ok &= attempt.proc.wait() == 0
            attempt.read()
        elif wait_and_kill(attempt, kill, killed, committed_iter(killed), step_s, rng):
            attempt.proc.wait()
            attempt.read()
            kill.happened = what_happened(attempt.lines, killed)
        else:
            attempt.read()
            kill.happened = f'not reached (exit {attempt.proc.returncode})'
            ok = False
        if previous is not None:  # this run resumed from the newest complete checkpoint
            previous.resumed_from = resumed_from(attempt.lines)
            ok &= previous.resumed_from == checkpoint_name(previous.newest_loadable)
        if kill is not None:
            kill.committed = committed_iter(killed)
            kill.newest_loadable = newest_loadable(killed)
        previous = kill

    final = f'iter_{args.iters}.pth'
    same = compare(osp.join(straight, final), osp.join(killed, final)) if ok else {}
    identical = bool(same) and all(a == b for a, b in same.values())
    print(f'\ncrash soak: {len(kills)} SIGKILLs, {args.iters} iterations, seed {args.seed}, '
          f'work dir {root}')
    print(f'{"#":>2}  {"kill point":<10}  {"target":>6}  {"happened":<62}  '
          f'{"last_checkpoint":<15}  {"newest loadable":<15}  resumed from')
    for i, kill in enumerate(kills, 1):
        print(f'{i:>2}  {kill.point:<10}  {kill.target_iter:>6}  {kill.happened:<62}  '
              f'{checkpoint_name(kill.committed):<15}  '
              f'{checkpoint_name(kill.newest_loadable):<15}  {kill.resumed_from}')
    print(f'final run: {"finished" if ok else "FAILED"}')
    for group, (n_same, total) in same.items():
        print(f'  {group}: {n_same}/{total} tensors bit-identical')
    print(f'result: {"PASS" if ok and identical else "FAIL"} (final weights '
          f'{"bit-identical" if identical else "differ"} to the uninterrupted run)')
    return 0 if ok and identical else 1


if __name__ == '__main__':
    sys.exit(main())

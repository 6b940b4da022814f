"""keep_freed_memory: large tensors come from glibc's heap (reused when freed), not from fresh
mmaps; DistillRunner applies it on CPUs when MMDISTILL_KEEP_FREED_MEMORY=1."""
import os
import subprocess
import sys

import pytest

PROBE = r'''
import torch
from mmdistill.engine.allocator import keep_freed_memory, mallinfo2
import os
print('on' if os.environ.get('PROBE_KEEP') == '1' and keep_freed_memory() else 'off')
before = mallinfo2().hblkhd
x = torch.ones(16 * 2**20)  # 64 MiB
mapped = mallinfo2().hblkhd - before
del x
for _ in range(4):  # glibc settles its bins in the first cycles (an aligned request does
    # not fit the exact freed chunk until neighbours have merged: three more heap extensions)
    y = torch.ones(16 * 2**20)
    del y
arena = mallinfo2().arena
for _ in range(3):  # then freed blocks serve the next tensors: no growth
    y = torch.ones(16 * 2**20)
    del y
print(mapped, mallinfo2().arena - arena)
'''


def _probe(keep: bool):
    env = dict(os.environ, PROBE_KEEP='1' if keep else '0')
    out = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


def _glibc_with_mallinfo2() -> bool:
    from mmdistill.engine.allocator import mallinfo2
    return mallinfo2() is not None


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason='needs glibc >= 2.33')
def test_large_blocks_come_from_the_heap_and_are_reused():
    state, mapped, grown = _probe(True)
    assert state == 'on'
    assert mapped == 0  # no mmap for 64 MiB
    assert grown == 0  # the freed heap blocks served the next tensors


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason='needs glibc >= 2.33')
def test_without_it_glibc_maps_large_blocks_afresh():
    state, mapped, _ = _probe(False)
    assert state == 'off'
    assert mapped >= 64 * 2**20  # glibc's default: a fresh mmap above its threshold


@pytest.mark.parametrize('env, applied', [('1', True), ('0', False), (None, False)])
def test_runner_applies_it_on_cpu_when_asked(monkeypatch, env, applied):
    import torch
    from mmengine.config import Config

    from mmdistill.engine import runner as runner_mod
    calls = []
    monkeypatch.setattr(runner_mod, 'keep_freed_memory', lambda: calls.append(1) or True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    if env is None:
        monkeypatch.delenv('MMDISTILL_KEEP_FREED_MEMORY', raising=False)
    else:
        monkeypatch.setenv('MMDISTILL_KEEP_FREED_MEMORY', env)
    monkeypatch.setattr(runner_mod.Runner, 'from_cfg', classmethod(lambda cls, cfg: 'built'))
    cfg = Config(dict(model=dict(type='Foo', skip_teacher=True)))
    assert runner_mod.DistillRunner.from_cfg(cfg) == 'built'
    assert calls == ([1] if applied else [])


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason='needs glibc >= 2.33')
def test_heap_in_use_follows_tensors():
    import torch

    from mmdistill.engine.allocator import heap_in_use
    before = heap_in_use()
    x = torch.ones(4 * 2**20)  # 16 MiB
    during = heap_in_use()
    del x
    assert during - before >= 16 * 2**20
    assert heap_in_use() - before < 2**20

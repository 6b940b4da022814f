"""keep_freed_memory (the benchmarks' --keep-freed-memory): large tensors come from glibc's heap
(reused when freed), not from fresh mmaps."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = r'''
import torch
import mmdistill  # as before the move (and in the benchmarks): the package loaded first
from tools.experiments.allocator import keep_freed_memory, mallinfo2
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
                         check=True, cwd=ROOT).stdout.split()
    return out[0], int(out[1]), int(out[2])


def _glibc_with_mallinfo2() -> bool:
    from tools.experiments.allocator import mallinfo2
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


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason='needs glibc >= 2.33')
def test_heap_in_use_follows_tensors():
    import torch

    from tools.experiments.allocator import heap_in_use
    before = heap_in_use()
    x = torch.ones(4 * 2**20)  # 16 MiB
    during = heap_in_use()
    del x
    assert during - before >= 16 * 2**20
    assert heap_in_use() - before < 2**20

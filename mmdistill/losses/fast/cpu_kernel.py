"""Hand-written CPU kernels of the fast forms: C++ sources of this folder, built on first use.

A kernel is plain C++ with a C ABI (no torch headers: it compiles in about a second, without
ninja), compiled with the machine's C++ compiler (``CXX``, default ``c++``) for the machine's own
vector extensions (``-march=native``: a CPU without AVX-512 gets AVX2 code) with OpenMP, whose
threads are those of the runtime torch has loaded (its libgomp has the system's soname), and
cached under ``~/.cache/mmdistill/kernels`` (``MMDISTILL_CACHE``) by a hash of the source, the
flags, the compiler and the CPU; loaded with ``ctypes``. Where no compiler builds it,
:meth:`CpuKernel.available` says why, once, and the loss runs its other form.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import os.path as osp
import platform
import subprocess
import tempfile

import torch
from mmengine.logging import print_log
from torch import Tensor

#: ``-fno-trapping-math`` (no floating-point traps are enabled; results unchanged) lets the
#: compiler vectorise comparisons and rounding: without it, GCC 12 left CWD's exponential scalar
#: on AVX2 (8x slower)
FLAGS = ['-O3', '-std=c++17', '-shared', '-fPIC', '-pthread', '-fno-trapping-math']
#: tried in order: the machine's vector extensions, then none; OpenMP threads, then the
#: kernel's own threads with OpenMP's simd loops only
VARIANTS = [arch + omp for arch in (['-march=native'], []) for omp in (['-fopenmp'],
                                                                       ['-fopenmp-simd'])]
#: the dtypes a kernel is built for, and the suffix of their functions
SUFFIX = {torch.float32: 'f32', torch.float64: 'f64'}


def _cpu_flags() -> str:
    """The CPU's model and feature flags (``-march=native`` compiles for them)."""
    try:
        with open('/proc/cpuinfo') as f:
            lines = [ln for ln in f if ln.startswith(('model name', 'flags', 'Features'))]
        return ''.join(sorted(set(lines)))
    except OSError:
        return platform.processor()


#: the L2 size assumed where the system does not tell it
DEFAULT_L2_BYTES = 1 << 20
#: where Linux describes the caches of the first core
CPU_CACHE_DIR = '/sys/devices/system/cpu/cpu0/cache'


@functools.lru_cache(maxsize=None)
def l2_bytes() -> int:
    """The size of a core's L2 cache (from ``CPU_CACHE_DIR``), else ``DEFAULT_L2_BYTES``."""
    for index in sorted(glob.glob(osp.join(CPU_CACHE_DIR, 'index*'))):
        try:
            with open(osp.join(index, 'level')) as f:
                level = f.read().strip()
            with open(osp.join(index, 'size')) as f:
                size = f.read().strip()
        except OSError:
            continue
        units = {'K': 1 << 10, 'M': 1 << 20}
        if level == '2' and size[:-1].isdigit() and size[-1] in units:
            return int(size[:-1]) * units[size[-1]]
    return DEFAULT_L2_BYTES


def compile_source(compiler: str, source: str, out: str) -> str | None:
    """Compile ``source`` to the shared library ``out``; None, or why it failed (every one of
    ``VARIANTS``)."""
    error = None
    for variant in VARIANTS:
        proc = subprocess.run([compiler, *FLAGS, *variant, source, '-o', out],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return None
        error = (proc.stderr.strip().splitlines() or [f'exit {proc.returncode}'])[-1]
    return error


class CpuKernel:
    """The C++ source ``source`` (a file of this folder, which may include this folder's
    headers) and the argument types of its functions ``<name>_f32`` / ``<name>_f64``
    (``signatures[name](real)``, ``real`` the ctypes type of the dtype's scalars) and result
    types (``restypes[name](real)``; None where not given), built and loaded on first use."""

    def __init__(self, source: str, signatures: dict, restypes: dict | None = None) -> None:
        self.source = osp.join(osp.dirname(osp.abspath(__file__)), source)
        self.signatures = signatures
        self.restypes = restypes or {}
        self.lib: ctypes.CDLL | None = None
        self.failed: str | None = None

    def _build(self) -> ctypes.CDLL:
        compiler = os.environ.get('CXX', 'c++')
        version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                                 check=True).stdout
        key = hashlib.sha256(repr((FLAGS, VARIANTS)).encode() + version.encode()
                             + _cpu_flags().encode())
        for path in [self.source, *sorted(glob.glob(osp.join(osp.dirname(self.source), '*.h')))]:
            with open(path, 'rb') as f:  # the source and the headers it may include
                key.update(f.read())
        key = key.hexdigest()[:16]
        cache = os.environ.get('MMDISTILL_CACHE',
                               osp.join(osp.expanduser('~'), '.cache', 'mmdistill'))
        name = osp.splitext(osp.basename(self.source))[0]
        path = osp.join(cache, 'kernels', f'{name}_{key}.so')
        if not osp.exists(path):
            os.makedirs(osp.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix='.so', dir=osp.dirname(path))
            os.close(fd)
            error = compile_source(compiler, self.source, tmp)
            if error is not None:
                os.remove(tmp)
                raise RuntimeError(f'{compiler}: {error}')
            os.replace(tmp, path)  # atomic: another process may be building the same file
        lib = ctypes.CDLL(path)
        for dtype, suffix in SUFFIX.items():
            real = ctypes.c_float if dtype == torch.float32 else ctypes.c_double
            for fn_name, argtypes in self.signatures.items():
                fn = getattr(lib, f'{fn_name}_{suffix}')
                fn.argtypes = argtypes(real)
                restype = self.restypes.get(fn_name)
                fn.restype = None if restype is None else restype(real)
        return lib

    def available(self, x: Tensor) -> bool:
        """Whether the kernel runs on ``x``: a float32 or float64 CPU tensor, and the kernel
        built (the first failure to build is logged once, with why)."""
        if x.device.type != 'cpu' or x.dtype not in SUFFIX or self.failed:
            return False
        if self.lib is None:
            try:
                self.lib = self._build()
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                self.failed = str(err)
                print_log(f'{osp.basename(self.source)} not built ({self.failed}); the loss '
                          'runs its other form', logger='current', level=30)
                return False
        return True

    def fn(self, name: str, dtype: torch.dtype):
        """The function ``name`` for ``dtype``, the kernel built if it is not yet."""
        if self.lib is None and not self.available(torch.empty(0, dtype=dtype)):
            raise RuntimeError(f'{osp.basename(self.source)} is not built: {self.failed}')
        return getattr(self.lib, f'{name}_{SUFFIX[dtype]}')


def ptr(x: Tensor) -> int:
    """The address of a contiguous tensor's data, for a kernel's pointer argument."""
    return x.data_ptr()


__all__ = ['CpuKernel', 'compile_source', 'l2_bytes', 'ptr']

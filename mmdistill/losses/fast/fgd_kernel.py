"""FGD's passes as one hand-tiled CPU kernel forward and one backward (``fgd_kernel.cpp``).

The kernel reads the student and teacher maps from memory once forward and once backward (tiles
of locations, all channels, read twice from cache), where the eager and compiled forms read them
four times (:mod:`.fgd_blocked`, :mod:`.fgd_compiled`). It is plain C++ (no torch headers),
compiled on first use with the machine's C++ compiler for the machine's own vector extensions
(``-march=native``, so a CPU without AVX-512 gets AVX2 code), cached under
``~/.cache/mmdistill/kernels`` (``MMDISTILL_CACHE``) by a hash of the source, the flags, the
compiler and the CPU, and loaded with ``ctypes``. Float32 and float64 maps on the CPU; where no
compiler is found :func:`available` says why, once, and the other forms run.

What the passes compute is described in :mod:`mmdistill.losses.fast.fgd`; this module turns
the kernel's per-task partial sums into the same reductions the other forms return.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import os.path as osp
import platform
import subprocess
import tempfile

import torch
from mmengine.logging import print_log
from torch import Tensor

SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'fgd_kernel.cpp')
FLAGS = ['-O3', '-std=c++17', '-shared', '-fPIC', '-pthread']
#: tried in order: the machine's vector extensions, then none; OpenMP threads (the runtime torch
#: has loaded), then the kernel's own threads with OpenMP's simd loops only
VARIANTS = [arch + omp for arch in (['-march=native'], []) for omp in (['-fopenmp'],
                                                                       ['-fopenmp-simd'])]
#: locations per tile: the tile's rows of S and T (256 channels, 512 KiB in float32) stay in
#: cache for the second sweep (256 measured faster than 128 and 512 on an AMD EPYC)
TILE = 256

_LIB: ctypes.CDLL | None = None
_FAILED: str | None = None


def _cpu_flags() -> str:
    """The CPU's model and feature flags (``-march=native`` compiles for them)."""
    try:
        with open('/proc/cpuinfo') as f:
            lines = [ln for ln in f if ln.startswith(('model name', 'flags', 'Features'))]
        return ''.join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _compile(compiler: str, out: str) -> str | None:
    """Compile the kernel to ``out``; None, or why it failed (every one of ``VARIANTS``)."""
    error = None
    for variant in VARIANTS:
        proc = subprocess.run([compiler, *FLAGS, *variant, SOURCE, '-o', out],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return None
        error = (proc.stderr.strip().splitlines() or ['exit %d' % proc.returncode])[-1]
    return error


def _library() -> ctypes.CDLL:
    """The compiled kernel, built on the first call (kept for the machine)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    compiler = os.environ.get('CXX', 'c++')
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                             check=True).stdout
    with open(SOURCE, 'rb') as f:
        key = hashlib.sha256(f.read() + repr((FLAGS, VARIANTS)).encode() + version.encode()
                             + _cpu_flags().encode()).hexdigest()[:16]
    cache = os.environ.get('MMDISTILL_CACHE', osp.join(osp.expanduser('~'), '.cache', 'mmdistill'))
    path = osp.join(cache, 'kernels', f'fgd_{key}.so')
    if not osp.exists(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix='.so', dir=osp.dirname(path))
        os.close(fd)
        error = _compile(compiler, tmp)
        if error is not None:
            os.remove(tmp)
            raise RuntimeError(f'{compiler}: {error}')
        os.replace(tmp, path)  # atomic: another process may be building the same file
    lib = ctypes.CDLL(path)
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    for suffix, real in (('f32', ctypes.c_float), ('f64', ctypes.c_double)):
        fwd = getattr(lib, f'fgd_forward_{suffix}')
        fwd.argtypes = [ptr] * 4 + [real] * 2 + [ptr, real] + [i64] * 5 + [ptr] * 6 + [i32]
        fwd.restype = None
        bwd = getattr(lib, f'fgd_backward_{suffix}')
        bwd.argtypes = [ptr] * 15 + [i64] * 5 + [ptr] * 4 + [i32]
        bwd.restype = None
    _LIB = lib
    return lib


def available(x: Tensor) -> bool:
    """Whether the kernel runs on ``x``: a float32 or float64 CPU tensor, and the kernel built
    (the first failure to build is logged once, with why)."""
    global _FAILED
    if x.device.type != 'cpu' or x.dtype not in (torch.float32, torch.float64) or _FAILED:
        return False
    try:
        _library()
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        _FAILED = str(err)
        print_log(f'FGD CPU kernel not built ({_FAILED}); the eager passes run instead',
                  logger='current', level=30)
        return False
    return True


def _chunk(n: int, hw: int) -> int:
    """Locations per task: whole tiles, at least four tasks per thread where the maps allow."""
    tasks_per_image = max(1, -(-4 * torch.get_num_threads() // n))
    per_task = -(-hw // tasks_per_image)
    return max(TILE, -(-per_task // TILE) * TILE)


def _fn(name: str, dtype: torch.dtype):
    return getattr(_library(), f'{name}_{"f32" if dtype == torch.float32 else "f64"}')


def _p(x: Tensor) -> int:
    return x.data_ptr()


def forward_sums(S3: Tensor, T3: Tensor, w_s: Tensor, w_t: Tensor, b_s: float, b_t: float,
                 pix_weight: Tensor, a_scale: float) -> tuple[Tensor, ...]:
    """The kernel's forward on contiguous ``(N, C, HW)`` maps, ``(C,)`` conv_mask weights and
    biases, ``(N, HW)`` ``pix_weight``; ``a_scale = 1 / (C temp)``.

    Returns ``as_hw, at_hw, ls, lt`` (N, HW) and ``as_c, at_c, dsum, q2`` (N, C), and the
    softmax numerator sums ``q1_e, ctx_s_e, ctx_t_e`` (N, C) against ``max_a, max_s, max_t``
    (N, 1): the maxima over the image's locations of ``at_hw * a_scale``, ``ls`` and ``lt``.
    """
    n, c, hw = S3.shape
    chunk = _chunk(n, hw)
    chunks = -(-hw // chunk)
    dtype = S3.dtype
    cols = torch.empty(4, n, hw, dtype=dtype)
    rows = torch.zeros(n, chunks, 7, c, dtype=dtype)
    maxima = torch.empty(n, chunks, 3, dtype=dtype)
    w_s, w_t = w_s.to(dtype).contiguous(), w_t.to(dtype).contiguous()
    pix_weight = pix_weight.contiguous()
    _fn('fgd_forward', dtype)(_p(S3), _p(T3), _p(w_s), _p(w_t), b_s, b_t, _p(pix_weight),
                              a_scale, n, c, hw, chunk, TILE, _p(cols[0]), _p(cols[1]),
                              _p(cols[2]), _p(cols[3]), _p(rows), _p(maxima),
                              torch.get_num_threads())
    top = maxima.amax(1, keepdim=True)  # (N, 1, 3)
    rescaled = rows[:, :, 4:] * torch.exp(maxima - top)[..., None]  # (N, chunks, 3, C)
    sums = rows[:, :, :4].sum(1)
    return (*cols, *sums.unbind(1), *rescaled.sum(1).unbind(1), *top[:, 0, :, None].unbind(1))


def backward_pass(S3: Tensor, T3: Tensor, two_q2: Tensor, two_q1: Tensor, g_as_c: Tensor,
                  g_dsum: Tensor, g_ctx_s: Tensor, g_ctx_t: Tensor, w_s: Tensor, weight: Tensor,
                  g_as_hw: Tensor, p_s: Tensor, p_t: Tensor, k_s: Tensor,
                  k_t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The kernel's backward: ``dS`` (N, C, HW), ``g_ls, g_lt`` (N, HW) and the conv_mask
    weight gradients ``sum_n sum_hw g_l F`` (C,) of S and T, from (N, C) coefficients, ``w_s``
    (C,), (N, HW) maps and the (N,) ``k = sum_c g_ctx ctx``."""
    n, c, hw = S3.shape
    chunk = _chunk(n, hw)
    chunks = -(-hw // chunk)
    dtype = S3.dtype
    small = [x.to(dtype).contiguous() for x in (two_q2, two_q1, g_as_c, g_dsum, g_ctx_s,
                                                 g_ctx_t, w_s, weight, g_as_hw, p_s, p_t,
                                                 k_s, k_t)]
    grad_S = torch.empty_like(S3)
    g_l = torch.empty(2, n, hw, dtype=dtype)
    rows = torch.zeros(n * chunks, 2, c, dtype=dtype)
    _fn('fgd_backward', dtype)(_p(S3), _p(T3), *map(_p, small), n, c, hw, chunk, TILE,
                               _p(grad_S), _p(g_l[0]), _p(g_l[1]), _p(rows),
                               torch.get_num_threads())
    rows = rows.sum(0)
    return grad_S, g_l[0], g_l[1], rows[0], rows[1]

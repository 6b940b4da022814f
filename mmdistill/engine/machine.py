"""What machine a number was measured on: CPU model, vector extensions, which reduced precisions
it runs natively, torch, threads (and the GPU where one is used)."""
from __future__ import annotations

import os
import platform
from collections.abc import Mapping

import torch

#: the CPU features that decide which kernels run (fp32 SIMD width, native bf16 / fp16), named
#: as ``torch.cpu.get_capabilities()`` names them
VECTOR_FLAGS = ('avx2', 'avx512_f', 'avx512_bf16', 'avx512_fp16', 'amx_bf16', 'amx_fp16')
#: ``/proc/cpuinfo``'s spelling of those it spells differently
_CPUINFO_NAMES = {'avx512_f': 'avx512f'}
#: the CPU features with which oneDNN runs each reduced precision's matmuls and convolutions in
#: hardware; without any of them torch emulates it (converting to fp32 and back)
NATIVE_FEATURES = {'bf16': ('avx512_bf16', 'amx_bf16'), 'fp16': ('avx512_fp16', 'amx_fp16')}


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(name):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    return _cpuinfo_field('model name') or platform.processor() or platform.machine()


def cpu_features() -> Mapping[str, bool]:
    """The CPU's features as ``torch.cpu.get_capabilities()`` reports them (torch's own
    detection, cpuinfo), else the flags of ``/proc/cpuinfo`` under torch's names."""
    get_capabilities = getattr(torch.cpu, 'get_capabilities', None)
    if get_capabilities is not None:
        try:
            return get_capabilities()
        except RuntimeError:
            pass
    flags = set((_cpuinfo_field('flags') or '').split())
    return {name: _CPUINFO_NAMES.get(name, name) in flags for name in VECTOR_FLAGS}


def cpu_vector_flags() -> list[str]:
    """Which of :data:`VECTOR_FLAGS` the CPU has."""
    features = cpu_features()
    return [f for f in VECTOR_FLAGS if features.get(f, False) is True]


def cpu_native_dtypes() -> tuple[str, ...]:
    """The reduced precisions (``'bf16'``, ``'fp16'``) this CPU runs in hardware
    (:data:`NATIVE_FEATURES`)."""
    features = cpu_features()
    return tuple(dtype for dtype, needs in NATIVE_FEATURES.items()
                 if any(features.get(f, False) is True for f in needs))


def machine_info(device: str = 'cpu') -> dict:
    """``cpu``, ``vector`` (flags), ``capability`` (torch's CPU kernel level), ``native``
    (reduced precisions run in hardware), ``cores``, ``usable`` (cores this process may use),
    ``torch``, ``threads``, and ``gpu`` (name, native reduced precisions) when ``device`` is
    ``'cuda'``: what a timing or a trained number depends on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = dict(cpu=cpu_model(), vector=cpu_vector_flags(),
                capability=torch.backends.cpu.get_cpu_capability(),
                native=list(cpu_native_dtypes()), cores=os.cpu_count(), usable=usable,
                torch=torch.__version__, threads=torch.get_num_threads())
    if device == 'cuda':
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        info['gpu'] = dict(name=torch.cuda.get_device_name(),
                           native=['bf16', 'fp16'] if bf16 else ['fp16'])
    return info


def _precisions(native: list[str]) -> str:
    return ', '.join(f'{dtype} {"native" if dtype in native else "emulated"}'
                     for dtype in NATIVE_FEATURES)


def machine_line(info: dict | None = None) -> str:
    """One line for a table's caption: the GPU if one is used, the CPU, its vector extensions,
    torch's kernel level, which reduced precisions are native or emulated, cores, torch,
    threads."""
    info = info or machine_info()
    cores = f'{info["cores"]} cores'
    if info.get('usable', info['cores']) != info['cores']:
        cores += f' ({info["usable"]} usable)'
    line = (f'CPU {info["cpu"]} ({", ".join(info["vector"]) or "no AVX2"}; torch kernels '
            f'{info["capability"]}; {_precisions(info.get("native", []))}), {cores}, '
            f'torch {info["torch"]}, {info["threads"]} threads')
    gpu = info.get('gpu')
    if gpu:
        line = f'GPU {gpu["name"]} ({_precisions(gpu["native"])}), {line}'
    return line

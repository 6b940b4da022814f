"""What machine a number was measured on: CPU model, vector extensions, torch, threads."""
from __future__ import annotations

import os
import platform

import torch

#: the CPU flags that decide which kernels run (fp32 SIMD width, native bf16 / fp16)
VECTOR_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_bf16', 'amx_tile')


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


def cpu_vector_flags() -> list[str]:
    """Which of :data:`VECTOR_FLAGS` the CPU reports."""
    flags = set((_cpuinfo_field('flags') or '').split())
    return [f for f in VECTOR_FLAGS if f in flags]


def machine_info() -> dict:
    """``cpu``, ``vector`` (flags), ``capability`` (torch's CPU kernel level), ``cores``,
    ``torch`` and ``threads``: what a timing or a trained number depends on."""
    return dict(cpu=cpu_model(), vector=cpu_vector_flags(),
                capability=torch.backends.cpu.get_cpu_capability(), cores=os.cpu_count(),
                torch=torch.__version__, threads=torch.get_num_threads())


def machine_line(info: dict | None = None) -> str:
    """One line for a table's caption: CPU, its vector extensions, torch, threads."""
    info = info or machine_info()
    return (f'{info["cpu"]} ({", ".join(info["vector"]) or "no AVX2"}; torch kernels '
            f'{info["capability"]}), {info["cores"]} cores, torch {info["torch"]}, '
            f'{info["threads"]} threads')

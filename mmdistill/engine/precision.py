"""Which precision and memory format a forward runs in on a device: an explicit setting, or what
``'auto'`` picks from what the device runs in hardware (never an emulated reduced precision)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .machine import NATIVE_FEATURES, cpu_features, cpu_model, cpu_native_dtypes

#: the reduced precisions and their autocast dtypes
AUTOCAST_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}
#: what ``model.teacher_autocast`` may be: None (fp32), ``'auto'`` (:func:`resolve_precision`)
#: or a reduced precision
AUTOCAST_SETTINGS = (None, 'auto', *AUTOCAST_DTYPES)


def native_dtypes(device_type: str) -> tuple[str, ...]:
    """The reduced precisions that ``device_type`` runs in hardware: on CUDA fp16, and bf16
    where ``torch.cuda.is_bf16_supported`` says so without emulation; on a CPU those of its
    features (:data:`~mmdistill.engine.machine.NATIVE_FEATURES`); none on other devices."""
    if device_type == 'cuda':
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return ('bf16', 'fp16') if bf16 else ('fp16',)
    if device_type == 'cpu':
        return cpu_native_dtypes()
    return ()


def _hardware(device_type: str, dtype: str) -> str:
    """What the device has or lacks to run ``dtype`` natively, in a few words."""
    if device_type == 'cpu':
        features = cpu_features()
        present = [f for f in NATIVE_FEATURES[dtype] if features.get(f, False) is True]
        if present:
            return f'CPU {cpu_model()} has {", ".join(present)}'
        return (f'CPU {cpu_model()} has neither {" nor ".join(NATIVE_FEATURES[dtype])}: '
                f'{dtype} is emulated')
    if device_type == 'cuda':
        native = dtype in native_dtypes(device_type)
        return (f'GPU {torch.cuda.get_device_name()} '
                f'{"runs" if native else "does not run"} {dtype} natively')
    return f'native {dtype} on {device_type} is not checked'


@dataclass(frozen=True)
class Precision:
    """A forward's precision on one device type.

    Args:
        autocast: the reduced precision (``'bf16'``, ``'fp16'``) to autocast to, or None (fp32).
        channels_last: weights and input in channels-last memory format.
        reason: why, in a few words (for the log).
        emulated: ``autocast`` is a precision the device emulates (slower than fp32).
    """

    autocast: str | None
    channels_last: bool
    reason: str
    emulated: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for fp32."""
        return AUTOCAST_DTYPES.get(self.autocast)

    def describe(self) -> str:
        """``'bf16 + channels-last'``, ``'fp32'``, ...: what runs."""
        return (self.autocast or 'fp32') + (' + channels-last' if self.channels_last else '')


def check_autocast(value: str | None) -> None:
    """Raise unless ``value`` is a ``model.teacher_autocast`` setting
    (:data:`AUTOCAST_SETTINGS`)."""
    if value not in AUTOCAST_SETTINGS:
        raise ValueError(f'model.teacher_autocast must be one of {list(AUTOCAST_SETTINGS)}, '
                         f'got {value!r}')


def resolve_precision(setting: str | None, device_type: str,
                      channels_last: bool | None = None) -> Precision:
    """The precision that ``setting`` gives on ``device_type``.

    ``'auto'``: bf16 where the device runs it natively (CUDA with bf16, CPUs with AVX512-BF16 or
    AMX-BF16), else fp16 on CUDA, else fp32 (the CPU emulates both: slower than fp32).
    Channels-last goes with a reduced precision (where its convolutions gain most) and not with
    fp32. ``'bf16'`` / ``'fp16'`` are honoured, marked ``emulated`` where the device lacks them.
    None is fp32. ``channels_last`` True / False overrides the memory format.
    """
    check_autocast(setting)
    native = native_dtypes(device_type)
    if setting == 'auto':
        if 'bf16' in native:
            autocast, reason = 'bf16', _hardware(device_type, 'bf16')
        elif device_type == 'cuda':
            autocast, reason = 'fp16', _hardware(device_type, 'bf16')
        else:
            autocast, reason = None, _hardware(device_type, 'bf16')
        emulated = False
    elif setting is None:
        autocast, reason, emulated = None, 'fp32 (no autocast set)', False
    else:
        autocast, emulated = setting, setting not in native
        reason = _hardware(device_type, setting)
    fmt = autocast is not None if channels_last is None else channels_last
    return Precision(autocast, fmt, reason, emulated)


def amp_optim_wrapper(device_type: str) -> tuple[str | None, str]:
    """The optimizer wrapper that ``--amp`` trains the student with on ``device_type`` and why:
    mmengine's ``AmpOptimWrapper`` (fp16, dynamic loss scale) on CUDA, ``'BF16OptimWrapper'`` on
    a CPU with native bf16, None (keep the fp32 ``OptimWrapper``) where bf16 is emulated."""
    if device_type == 'cuda':
        return 'AmpOptimWrapper', 'CUDA: fp16 autocast with a dynamic loss scale'
    if 'bf16' in native_dtypes(device_type):
        return 'BF16OptimWrapper', _hardware(device_type, 'bf16')
    return None, _hardware(device_type, 'bf16')


__all__ = ['AUTOCAST_DTYPES', 'AUTOCAST_SETTINGS', 'Precision', 'amp_optim_wrapper',
           'check_autocast', 'native_dtypes', 'resolve_precision']

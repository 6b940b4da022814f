"""The teachers: a trained model built from its config and checkpoint (frozen), or the student's
exponential moving average (EMA self-distillation); built with clear errors at build time, fed
their own input normalisation, run under no_grad (and autocast) only as far as their taps need,
their taps recorded.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import ExponentialMovingAverage
from mmengine.registry import DefaultScope, Registry
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

from .recorder import FeatureRecorder, Tap, run_to_scope, scope_of

_KEY = 'model.teacher'
AUTOCAST = {None: None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
#: the keys of ``teacher=dict(ema=dict(...))``: :class:`mmengine.model.ExponentialMovingAverage`'s
EMA_KEYS = ('momentum', 'interval', 'update_buffers')


def teacher_specs(teacher: dict | None, teachers: dict | None) -> dict[str, tuple[str, dict]]:
    """``{name: (config key, spec)}`` of ``model.teacher`` (one teacher, named ``'teacher'``) or
    of ``model.teachers`` (``{name: spec}``); exactly one of the two must be given."""
    if (teacher is None) == (teachers is None):
        raise ValueError('give exactly one of model.teacher=dict(config=..., checkpoint=...) '
                         '(or dict(ema=dict(momentum=...))) and model.teachers=dict(<name>=dict('
                         'config=..., checkpoint=...), ...), got '
                         + ('both' if teacher is not None else 'neither'))
    if teacher is not None:
        return {'teacher': (_KEY, teacher)}
    if not isinstance(teachers, dict) or not teachers:
        raise ValueError('model.teachers: expected dict(<name>=dict(config=..., checkpoint=...), '
                         f'...), got {teachers!r}')
    for name in teachers:
        if not (isinstance(name, str) and name.isidentifier()):
            raise ValueError(f'model.teachers: teacher names are identifiers, got {name!r}')
    return {name: (f'model.teachers.{name}', spec) for name, spec in teachers.items()}


def load_config(spec: str | dict, key: str) -> Config:
    """Load a config from a path, an ``'mmdet::path'`` package path or a dict."""
    if isinstance(spec, dict):
        return Config(dict(spec))
    if not isinstance(spec, str):
        raise TypeError(f'{key}: expected a path, "mmdet::..." or a dict, got {spec!r}')
    if '::' in spec:
        from mmengine.hub import get_config
        try:
            return get_config(spec)
        except (FileNotFoundError, ValueError, ModuleNotFoundError) as err:
            raise FileNotFoundError(f'{key}: cannot load config {spec!r}: {err}') from err
    if not os.path.isfile(spec):
        raise FileNotFoundError(f'{key}: config file {spec!r} does not exist')
    return Config.fromfile(spec)


def model_config(cfg: Config, key: str = _KEY) -> dict:
    """The model part of a full config (or the config itself when it is a model config).

    A top-level ``data_preprocessor`` (mmpretrain's configs keep it there) goes into the model,
    as mmengine's Runner does, so the teacher keeps its own normalisation.
    """
    model = cfg.get('model', cfg)
    if 'type' not in model:
        raise ValueError(f'{key}.config: no model type in the teacher config')
    if model is not cfg and cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', cfg.data_preprocessor)
    return model


def load_teacher_weights(model: nn.Module, checkpoint: str,
                         key: str = f'{_KEY}.checkpoint') -> None:
    """Load ``checkpoint`` into ``model`` strictly, as weights only.

    Raises with the key named when the file is missing, holds more than tensors and plain
    containers, or does not fit the model (missing/unexpected keys, shape mismatches).
    """
    if '://' not in checkpoint and not os.path.isfile(checkpoint):
        raise FileNotFoundError(f'{key}: teacher checkpoint {checkpoint!r} does not exist')
    try:
        ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    except pickle.UnpicklingError as err:
        raise ValueError(
            f'{key}: {checkpoint!r} holds more than tensors and plain containers, so it is not '
            'loaded (teacher checkpoints load as weights only). Save the teacher as '
            "{'state_dict': model.state_dict()}, e.g. with "
            'tools/export_student.py TEACHER_CONFIG CHECKPOINT OUT.pth. '
            f'Loader said: {str(err).splitlines()[0]}') from err
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{key}: {checkpoint!r} holds no state dict')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in own if k in state and hasattr(state[k], 'shape')
              and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f'{key}: {checkpoint!r} does not fit the teacher config: '
            f'{len(missing)} missing keys {missing[:8]}, '
            f'{len(unexpected)} unexpected keys {unexpected[:8]}, '
            f'{len(shapes)} shape mismatches {shapes[:8]}')
    model.load_state_dict(state, strict=True)


def build_teacher(registry: Registry, teacher: dict, key: str = _KEY) -> nn.Module:
    """Build the teacher from ``dict(config=..., checkpoint=...)``: loaded, eval, frozen.

    Its own initialisation (pretrained backbone URLs) is never run: the checkpoint holds all
    its weights. ``key`` names the teacher's config key in errors.
    """
    if not isinstance(teacher, dict) or 'config' not in teacher:
        raise ValueError(f'{key}: expected dict(config=..., checkpoint=...) or '
                         f'dict(ema=dict(momentum=...)), got {teacher!r}')
    unknown = set(teacher) - {'config', 'checkpoint'}
    if unknown:
        raise ValueError(f'{key}: unknown keys {sorted(unknown)} (expected config, checkpoint; '
                         'or ema alone)')
    if not teacher.get('checkpoint'):
        raise ValueError(f'{key}.checkpoint: a teacher needs its trained weights')
    model = registry.build(model_config(load_config(teacher['config'], f'{key}.config'), key))
    load_teacher_weights(model, teacher['checkpoint'], f'{key}.checkpoint')
    model.eval()
    model.requires_grad_(False)
    return model


def is_ema(spec: object) -> bool:
    """Whether a teacher spec asks for the student's moving average, ``dict(ema=...)``."""
    return isinstance(spec, dict) and 'ema' in spec


def build_ema(student: nn.Module, teacher: dict, key: str = _KEY) -> ExponentialMovingAverage:
    """The EMA teacher of ``dict(ema=dict(momentum=0.0002, interval=1, update_buffers=False))``.

    mmengine's :class:`~mmengine.model.ExponentialMovingAverage` of a copy of ``student``:
    ``averaged = (1 - momentum) * averaged + momentum * student`` every ``interval``-th update;
    its first update copies the student (``steps == 0``). ``update_buffers``: average the buffers
    (BN statistics) too, else copy them from the student at every update.
    """
    extra = set(teacher) - {'ema'}
    if extra:
        raise ValueError(f'{key}: ema cannot be combined with {sorted(extra)}: an EMA teacher is '
                         'the average of the student, with no config or checkpoint of its own')
    ema = teacher['ema']
    if not isinstance(ema, dict):
        raise ValueError(f'{key}.ema: expected dict(momentum=..., interval=..., '
                         f'update_buffers=...), got {ema!r}')
    unknown = set(ema) - set(EMA_KEYS)
    if unknown:
        raise ValueError(f'{key}.ema: unknown keys {sorted(unknown)} (expected {list(EMA_KEYS)})')
    momentum, interval = ema.get('momentum', 0.0002), ema.get('interval', 1)
    if not 0 < momentum < 1:
        raise ValueError(f'{key}.ema.momentum must be in (0, 1) (the weight of the student in '
                         f'each update), got {momentum!r}')
    if not isinstance(interval, int) or interval < 1:
        raise ValueError(f'{key}.ema.interval must be an integer >= 1, got {interval!r}')
    average = ExponentialMovingAverage(student, momentum, interval,
                                       update_buffers=bool(ema.get('update_buffers', False)))
    average.module.eval()
    return average


def check_autocast(value: str | None) -> None:
    if value not in AUTOCAST:
        raise ValueError(f'model.teacher_autocast must be one of {list(AUTOCAST)}, got {value!r}')


@dataclass(frozen=True)
class Renormalisation:
    """Turns the student's normalised inputs into the teacher's: undo the student's mean/std,
    flip the channel order if only one of them converts BGR to RGB, apply the teacher's."""

    student_mean: torch.Tensor | None
    student_std: torch.Tensor | None
    flip: bool
    teacher_mean: torch.Tensor | None
    teacher_std: torch.Tensor | None

    @staticmethod
    def _stats(pre: nn.Module) -> tuple:
        mean = getattr(pre, 'mean', None) if getattr(pre, '_enable_normalize', False) else None
        std = getattr(pre, 'std', None) if mean is not None else None
        flip = (getattr(pre, '_channel_conversion', None)  # mmengine, mmdet
                or getattr(pre, 'to_rgb', None)  # mmpretrain
                or getattr(pre, 'channel_conversion', False))  # mmseg
        return mean, std, bool(flip)

    @classmethod
    def between(cls, student_pre: nn.Module, teacher_pre: nn.Module) -> 'Renormalisation | None':
        """None when both data preprocessors normalise the same way."""
        (ms, ss, cs), (mt, st, ct) = cls._stats(student_pre), cls._stats(teacher_pre)
        same = (cs == ct and (ms is None) == (mt is None)
                and (ms is None or (torch.equal(ms, mt) and torch.equal(ss, st))))
        return None if same else cls(ms, ss, cs != ct, mt, st)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs if self.student_mean is None else \
            inputs * self.student_std.to(inputs) + self.student_mean.to(inputs)
        if self.flip:
            x = x.flip(1)
        return x if self.teacher_mean is None else \
            (x - self.teacher_mean.to(x)) / self.teacher_std.to(x)


class Teacher:
    """A frozen teacher model with what running it takes.

    It is not an ``nn.Module``: a wrapper holding it does not register its parameters, so they
    stay out of the optimiser and DDP's reducer; the distiller's state-dict hooks
    (:func:`save_teacher_state`) put them into training checkpoints when they are training
    state (an EMA teacher) or when asked (``save_teacher``).

    Args:
        model: the loaded, frozen teacher (:func:`build_teacher`), or ``ema.module``.
        checkpoint: the file it was loaded from (None for an EMA teacher).
        taps: ``(tap, config key)`` pairs to record.
        student_preprocessor: the student's data preprocessor, whose output the teacher gets.
        autocast: None, 'fp16' or 'bf16' for the teacher's forward.
        channels_last: keep the teacher's weights and its input in channels-last memory format
            (convolutions in NHWC: oneDNN on CPUs, cuDNN tensor cores). None: on with
            ``autocast``, where it pays most (bf16 + channels-last: 2.9x over fp32 for the X101
            RetinaNet FGD teacher on a 2-core AVX512-BF16 CPU, ``benchmark_step.py``).
        key: its config key, ``'model.teacher'`` or ``'model.teachers.<name>'``; its keys in
            the distiller's state dict start with that path less ``'model.'``.
        ema: the :class:`~mmengine.model.ExponentialMovingAverage` whose ``module`` is ``model``
            (:func:`build_ema`), updated by :meth:`update_average`.
    """

    def __init__(self, model: nn.Module, checkpoint: str | None, taps: list[tuple[Tap, str]],
                 student_preprocessor: nn.Module, autocast: str | None = None,
                 channels_last: bool | None = None, key: str = _KEY,
                 ema: ExponentialMovingAverage | None = None) -> None:
        self.model = model
        self.checkpoint = checkpoint
        self.key, self.prefix = key, key[len('model.'):] + '.'
        self.ema = ema
        self.configure(autocast, channels_last)
        self.recorder = FeatureRecorder(model, taps, 'teacher')
        self.scope = scope_of(t for t, _ in taps)
        self.renorm = Renormalisation.between(student_preprocessor, model.data_preprocessor)

    @classmethod
    def build(cls, registry: Registry, cfg: dict, taps: list[tuple[Tap, str]],
              student: nn.Module, autocast: str | None = None,
              channels_last: bool | None = None, key: str = _KEY) -> 'Teacher':
        """Build from ``dict(config=..., checkpoint=...)`` in ``registry``'s scope, or from
        ``dict(ema=dict(...))`` as the moving average of ``student`` (:func:`build_ema`)."""
        ema = None
        if is_ema(cfg):
            ema = build_ema(student, cfg, key)
            model = ema.module
        else:
            with DefaultScope.overwrite_default_scope(registry.scope):
                model = build_teacher(registry, cfg, key)
        return cls(model, None if ema else cfg.get('checkpoint'), taps,
                   student.data_preprocessor, autocast, channels_last, key, ema)

    def configure(self, autocast: str | None, channels_last: bool | None = None) -> None:
        """Set the forward's precision and memory format (see the class arguments)."""
        check_autocast(autocast)
        self.autocast = autocast
        self.channels_last = autocast is not None if channels_last is None else channels_last
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.apply(lambda t: t.to(memory_format=fmt) if t.dim() in (4, 5) else t)

    @property
    def module(self) -> nn.Module:
        """The module that holds the teacher's state: the model, or the EMA around it."""
        return self.model if self.ema is None else self.ema

    def apply(self, fn, *args, **kwargs) -> None:
        """``nn.Module._apply`` on the teacher (and its EMA step count): device, dtype, format."""
        self.module._apply(fn, *args, **kwargs)
        if self.ema is not None:  # it averages into the tensors it listed: list the new ones
            self.ema.avg_parameters = (self.model.state_dict() if self.ema.update_buffers
                                       else dict(self.model.named_parameters()))

    @torch.no_grad()
    def update_average(self, student: nn.Module) -> None:
        """An EMA teacher: one update from ``student``'s current weights; a trained one: none."""
        if self.ema is not None:
            self.ema.update_parameters(student)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds of the teacher: its weights, or the EMA's (``steps``,
        ``module.*``)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)

    def inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's view of the student's preprocessed ``inputs``."""
        return inputs if self.renorm is None else self.renorm(inputs)

    def __deepcopy__(self, memo: dict) -> 'Teacher':
        """The frozen teacher is shared, not copied (mmengine's EMAHook deep-copies the model)."""
        return self

    def run(self, inputs: torch.Tensor, data_samples: list | None, autocast: bool = True) -> None:
        """Forward (no grad, autocast unless ``autocast=False``) as far as the taps need; the
        recorder keeps the taps."""
        dtype = AUTOCAST[self.autocast] if autocast else None
        autocast = torch.autocast(inputs.device.type, dtype=dtype, enabled=dtype is not None)
        inputs = self.inputs(inputs)
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast:
            run_to_scope(self.model, self.scope, inputs, data_samples)

    def keep_only(self, taps: Iterable[Tap]) -> None:
        self.recorder.keep_only(taps)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the teacher's parameters and buffers."""
        return sum(t.numel() * t.element_size() for t in self.model.state_dict().values())


def save_teacher_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> dict:
    """State-dict hook of a distiller: adds each teacher's :meth:`Teacher.state_dict` under its
    prefix (``teacher.*``, ``teachers.<name>.*``): an EMA teacher's always (it is training
    state: a resumed run continues the average), a trained teacher's when ``save_teacher``."""
    for teacher in module.frozen_teachers.values():
        if teacher.ema is not None or module.save_teacher:
            for name, value in teacher.state_dict().items():
                state_dict[f'{prefix}{teacher.prefix}{name}'] = value.detach()
    return state_dict


def load_teacher_state(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load-state-dict pre-hook of a distiller: takes the ``teacher.*`` and ``teachers.*`` keys
    out of the state dict and loads each teacher's into it (strictly). A student-only model
    (``skip_teacher``) has no teachers, loss modules or measured weights: their keys are
    dropped."""
    if module.skip_teacher:
        for k in [k for k in state_dict
                  if k.startswith((prefix + 'distill_losses.', prefix + 'auto_weights.'))]:
            del state_dict[k]
    keys = [k for k in state_dict if k.startswith((prefix + 'teacher.', prefix + 'teachers.'))]
    saved = {k[len(prefix):]: state_dict.pop(k) for k in keys}
    for teacher in module.frozen_teachers.values():
        own = {k[len(teacher.prefix):]: v for k, v in saved.items()
               if k.startswith(teacher.prefix)}
        if own:
            teacher.load_state_dict(own)
            print_log(f'loaded {teacher.key} from the checkpoint', logger='current')


@torch.no_grad()
def inherit_weights(teacher: nn.Module, student: nn.Module, prefixes) -> list[str]:
    """Copy the teacher's tensors under ``prefixes`` into the student where names and shapes
    match (``init_student``); log what was copied and what did not match."""
    s_state = student.state_dict()
    copied, skipped = [], []
    for name, value in teacher.state_dict().items():
        if not name.startswith(tuple(prefixes)):
            continue
        if name in s_state and s_state[name].shape == value.shape:
            s_state[name].copy_(value)
            copied.append(name)
        else:
            skipped.append(name)
    print_log(f'init_student: copied {len(copied)} teacher tensors under {list(prefixes)} '
              f'into the student; {len(skipped)} did not match in name or shape'
              + (f' (e.g. {skipped[:5]})' if skipped else ''), logger='current')
    return copied

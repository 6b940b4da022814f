"""Which teachers a distiller config asks for: ``model.teacher`` or ``model.teachers``."""
from __future__ import annotations

#: the config key of the single teacher; ``model.teachers.<name>`` for several.
TEACHER_KEY = 'model.teacher'


def teacher_specs(teacher: dict | None, teachers: dict | None) -> dict[str, tuple[str, dict]]:
    """``{name: (config key, spec)}`` of ``model.teacher`` (one teacher, named ``'teacher'``) or
    of ``model.teachers`` (``{name: spec}``); exactly one of the two must be given."""
    if (teacher is None) == (teachers is None):
        raise ValueError('give exactly one of model.teacher=dict(config=..., checkpoint=...) '
                         '(or dict(ema=dict(momentum=...))) and model.teachers=dict(<name>=dict('
                         'config=..., checkpoint=...), ...), got '
                         + ('both' if teacher is not None else 'neither'))
    if teacher is not None:
        return {'teacher': (TEACHER_KEY, teacher)}
    if not isinstance(teachers, dict) or not teachers:
        raise ValueError('model.teachers: expected dict(<name>=dict(config=..., checkpoint=...), '
                         f'...), got {teachers!r}')
    for name in teachers:
        if not (isinstance(name, str) and name.isidentifier()):
            raise ValueError(f'model.teachers: teacher names are identifiers, got {name!r}')
    return {name: (f'model.teachers.{name}', spec) for name, spec in teachers.items()}


def is_ema(spec: object) -> bool:
    """Whether a teacher spec asks for the student's moving average, ``dict(ema=...)``."""
    return isinstance(spec, dict) and 'ema' in spec

"""Student and teacher features of the same inputs, tap by tap: what the feature analysis tools
(``tools/analysis/feature_similarity.py``, ``visualize_features.py``) look at."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from mmengine.config import Config

from ..recorder import FeatureRecorder, Tap, run_recorded, run_to_scope, scope_of


def build_distiller(cfg: Config, checkpoint: str | None = None):
    """The distiller of ``cfg`` (teacher from its checkpoint), in eval mode, with the student's
    weights from ``checkpoint``: a training checkpoint of the config or a plain student state."""
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location='cpu')
        state = state.get('state_dict', state)
        if not any(k.startswith('student.') for k in state):
            state = {f'student.{k}': v for k, v in state.items()}
        model.load_state_dict(state, strict=False)
    return model.eval()


def tap_pairs(model, taps: list[str] | None) -> list[tuple[str, str, str]]:
    """``(student tap, teacher tap, teacher name)`` triples: ``taps`` given as ``'tap'`` or
    ``'s_tap:t_tap'``, each with an optional ``'@<teacher name>'`` (needed with several
    teachers), else those of the model's loss entries."""
    if not taps:
        pairs = []
        for entry in model.entries:
            for s, t in zip(entry.student_taps, entry.teacher_taps):
                if (str(s), str(t), entry.teacher_name) not in pairs:
                    pairs.append((str(s), str(t), entry.teacher_name))
        return pairs
    names = list(model.teachers)
    pairs = []
    for spec in taps:
        spec, _, name = spec.partition('@')
        if not name and len(names) > 1:
            raise ValueError(f'tap {spec!r}: name its teacher with @<name>, one of {names}')
        if name and name not in names:
            raise ValueError(f'tap {spec!r}: {name!r} names no teacher; the teachers are {names}')
        s, _, t = spec.partition(':')
        pairs.append((s, t or s, name or names[0]))
    return pairs


@contextmanager
def paired_features(model, pairs: list[tuple[str, str, str]]) -> Iterator:
    """Yield ``features(batch) -> {'tap [level]': (student map, teacher map), ...}`` for raw
    dataloader batches, with hooks on the models for the duration; ``pairs`` from
    :func:`tap_pairs` (the key names the teacher too when there are several)."""
    s_taps = [(Tap.parse(s), f'student {s}') for s, _, _ in pairs]
    t_taps = [(Tap.parse(t), f'teacher {t}') for _, t, _ in pairs]
    used = {name: model.teachers[name] for _, _, name in pairs}
    s_rec = FeatureRecorder(model.student, s_taps, 'student')
    t_recs = {name: FeatureRecorder(teacher.model, [tap for tap, (_, _, n) in zip(t_taps, pairs)
                                                    if n == name], 'teacher')
              for name, teacher in used.items()}
    scope = scope_of(t for t, _ in s_taps)
    several = len(model.teachers) > 1

    @torch.no_grad()
    def features(batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        data = model.data_preprocessor(batch, False)
        out = {}
        with ExitStack() as stack:
            for rec in [s_rec, *t_recs.values()]:
                stack.enter_context(rec.recording())

            def run() -> None:
                run_to_scope(model.student, scope, data['inputs'], data['data_samples'])
                for teacher in used.values():
                    teacher.run(data['inputs'], data['data_samples'])

            run_recorded([s_rec, *t_recs.values()], run)
            for (s_tap, s_key), (t_tap, t_key), (s, t, name) in zip(s_taps, t_taps, pairs):
                key = (s if s == t else f'{s} : {t}') + (f' @{name}' if several else '')
                levels = zip(s_rec.get(s_tap, s_key), t_recs[name].get(t_tap, t_key))
                for level, (fs, ft) in enumerate(levels):
                    out[f'{key} [{level}]'] = (fs.float(), ft.float())
        return out

    try:
        yield features
    finally:
        for rec in [s_rec, *t_recs.values()]:
            rec.remove()


__all__ = ['build_distiller', 'paired_features', 'tap_pairs']

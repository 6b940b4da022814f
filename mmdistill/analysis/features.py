"""Student and teacher features of the same inputs, tap by tap: what the feature analysis tools
(``tools/analysis/feature_similarity.py``, ``visualize_features.py``) look at."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


def tap_pairs(model, taps: list[str] | None) -> list[tuple[str, str]]:
    """``(student tap, teacher tap)`` pairs: ``taps`` given as ``'tap'`` or ``'s_tap:t_tap'``,
    else those of the model's loss entries."""
    if taps:
        return [tuple(t.split(':', 1)) if ':' in t else (t, t) for t in taps]
    pairs = []
    for entry in model.entries:
        for s, t in zip(entry.student_taps, entry.teacher_taps):
            if (str(s), str(t)) not in pairs:
                pairs.append((str(s), str(t)))
    return pairs


@contextmanager
def paired_features(model, pairs: list[tuple[str, str]]) -> Iterator:
    """Yield ``features(batch) -> {'tap [level]': (student map, teacher map), ...}`` for raw
    dataloader batches, with hooks on both models for the duration."""
    s_taps = [(Tap.parse(s), f'student {s}') for s, _ in pairs]
    t_taps = [(Tap.parse(t), f'teacher {t}') for _, t in pairs]
    s_rec = FeatureRecorder(model.student, s_taps, 'student')
    t_rec = FeatureRecorder(model.teacher, t_taps, 'teacher')
    scope = scope_of(t for t, _ in s_taps)

    @torch.no_grad()
    def features(batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        data = model.data_preprocessor(batch, False)
        out = {}
        with s_rec.recording(), t_rec.recording():
            run_recorded((s_rec, t_rec), lambda: (
                run_to_scope(model.student, scope, data['inputs'], data['data_samples']),
                model.frozen_teacher.run(data['inputs'], data['data_samples'])))
            for (s_tap, s_key), (t_tap, t_key), (s, t) in zip(s_taps, t_taps, pairs):
                name = s if s == t else f'{s} : {t}'
                levels = zip(s_rec.get(s_tap, s_key), t_rec.get(t_tap, t_key))
                for level, (fs, ft) in enumerate(levels):
                    out[f'{name} [{level}]'] = (fs.float(), ft.float())
        return out

    try:
        yield features
    finally:
        s_rec.remove()
        t_rec.remove()


__all__ = ['build_distiller', 'paired_features', 'tap_pairs']

"""TeacherEvalHook: the teacher's validation metrics once, before training, beside the student's.

A teacher loaded from the wrong checkpoint, built from the wrong config or fed wrongly normalised
inputs shows at once, as a metric far below its model-zoo number, instead of as a student that
learns worse than it should.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner.amp import autocast

from ..distiller import BaseDistiller
from ..teacher import Teacher


@contextmanager
def teacher_predictions(distiller: BaseDistiller, teacher: Teacher) -> Iterator[None]:
    """Within the block ``distiller.predict`` (used by ``val_step`` and ``test_step``) predicts
    with ``teacher``: its model on its own view of the student's preprocessed inputs."""

    def predict(inputs, data_samples=None) -> list:
        return teacher.model.predict(teacher.inputs(inputs), data_samples)

    distiller.predict = predict  # an instance attribute: shadows the method
    try:
        yield
    finally:
        del distiller.predict


@HOOKS.register_module()
class TeacherEvalHook(Hook):
    """Before training, run the validation data through each teacher and log its metrics.

    The val loop's dataloader and evaluator are used directly, without the val loop's hooks, so
    nothing that reacts to validation (checkpoint 'best' logic, early stopping, the logger's val
    lines) sees these metrics. They go to the log (``teacher/<metric>``; with several teachers
    ``teacher/<name>/<metric>``) and to the visualizer's backends at step 0, beside the student's
    val metrics; :attr:`metrics` keeps them.

    Opt-in: ``custom_hooks = [dict(type='TeacherEvalHook')]``.

    Args:
        prefix: the prefix of the logged metric names.
        on_resume: also run when training resumes (by default only at iteration 0).
    """

    priority = 'LOW'

    def __init__(self, prefix: str = 'teacher', on_resume: bool = False) -> None:
        self.prefix = prefix
        self.on_resume = on_resume
        self.metrics: dict[str, float] = {}

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not isinstance(model, BaseDistiller) or not model.teachers:
            print_log('TeacherEvalHook: the model has no teacher to evaluate (not a distiller, '
                      'or skip_teacher); skipped', logger='current', level=30)
            return
        if runner.iter > 0 and not self.on_resume:
            return
        val_loop = runner.val_loop
        if val_loop is None:
            print_log('TeacherEvalHook: no val_dataloader / val_evaluator; skipped',
                      logger='current', level=30)
            return
        for name, teacher in model.teachers.items():
            prefix = self.prefix if len(model.teachers) == 1 else f'{self.prefix}/{name}'
            with teacher_predictions(model, teacher):
                metrics = self.evaluate(runner, val_loop)
            self.metrics.update({f'{prefix}/{k}': v for k, v in metrics.items()})
        runner.logger.info('Teacher on the validation data: ' + '  '.join(
            f'{k}: {v:.4f}' if isinstance(v, float) else f'{k}: {v}'
            for k, v in self.metrics.items()))
        runner.visualizer.add_scalars(self.metrics, step=runner.iter)

    @staticmethod
    def evaluate(runner, val_loop) -> dict:
        """The val loop's iteration without its hooks: ``val_step`` over the dataloader, then
        the evaluator (which resets itself afterwards)."""
        model = runner.model
        was_training = model.training
        model.eval()
        try:
            for data_batch in val_loop.dataloader:
                with autocast(enabled=getattr(val_loop, 'fp16', False)):
                    outputs = model.val_step(data_batch)
                val_loop.evaluator.process(data_samples=outputs, data_batch=data_batch)
            return val_loop.evaluator.evaluate(len(val_loop.dataloader.dataset))
        finally:
            model.train(was_training)

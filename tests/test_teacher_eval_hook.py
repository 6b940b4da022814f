"""TeacherEvalHook: the teacher's val metrics before training equal the teacher model's own,
evaluated directly; the distiller predicts with the student again afterwards, and the val loop's
evaluator is left ready for the student."""
import json
import os.path as osp

import pytest
import torch

pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402
from mmengine.evaluator import Evaluator  # noqa: E402
from mmengine.runner import load_checkpoint  # noqa: E402

from mmdistill.engine import DistillRunner  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402
from tests.utils import (save_teacher, tiny_classifier,  # noqa: E402
                         tiny_distill_classifier_config)

CIFAR = osp.join(SHARED_DATA, 'cifar10')


def teacher_accuracy_directly(teacher_ckpt: str, dataloader) -> dict:
    """The teacher model alone (built and loaded here), through its own ``val_step``."""
    from mmpretrain.registry import MODELS
    model = MODELS.build(tiny_classifier(16))
    load_checkpoint(model, teacher_ckpt, map_location='cpu', strict=True)
    model.eval()
    evaluator = Evaluator(dict(type='Accuracy', topk=(1, )))
    with torch.no_grad():
        for batch in dataloader:
            evaluator.process(data_samples=model.val_step(batch), data_batch=batch)
    return evaluator.evaluate(len(dataloader.dataset))


@pytest.mark.skipif(not osp.isdir(CIFAR), reason='needs ../shared/data/cifar10')
def test_teacher_metrics_logged_before_training(tmp_path):
    from tools.experiments.cifar import cifar_config
    teacher = str(tmp_path / 'teacher.pth')
    save_teacher(tiny_classifier(16), teacher, scope='mmpretrain')
    cfg = cifar_config(tiny_distill_classifier_config(teacher), CIFAR, str(tmp_path / 'run'), 2,
                       8, 0.05, 'teacher_eval', curve_subset=64, progress=False,
                       extra_hooks=[dict(type='TeacherEvalHook')])
    runner = DistillRunner.from_cfg(Config(cfg))
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'TeacherEvalHook')
    direct = teacher_accuracy_directly(teacher, runner.val_loop.dataloader)
    assert set(hook.metrics) == {'teacher/accuracy/top1'}
    assert hook.metrics['teacher/accuracy/top1'] == pytest.approx(direct['accuracy/top1'])
    with open(osp.join(runner.log_dir, 'vis_data', 'scalars.json')) as f:
        logged = [r for r in map(json.loads, f) if 'teacher/accuracy/top1' in r]
    assert logged == [{'teacher/accuracy/top1': direct['accuracy/top1'], 'step': 0}]
    # the distiller predicts with the student again; the evaluator is clean for the student
    model = runner.model
    assert 'predict' not in vars(model)
    assert set(runner.val()) == {'accuracy/top1'}
    batch = next(iter(runner.val_loop.dataloader))
    scores = model.val_step(batch)[0].pred_score
    student_scores = model.student.val_step(batch)[0].pred_score
    teacher_scores = model.teacher.model.val_step(batch)[0].pred_score
    assert torch.equal(scores, student_scores) and not torch.allclose(scores, teacher_scores)

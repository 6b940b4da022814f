# Multi-teacher KD: ResNet-34 and ResNet-50 (teachers) -> ResNet-18 (student) on ImageNet-1k.
# Each teacher has its own KD entry on the logits (teacher_name), their weights summing to the
# single-teacher KD weight: the simplest multi-teacher KD (You et al., KDD 2017, average the
# teachers' soft targets instead). An example recipe built on the single-teacher one of
# configs/kd/kd_resnet34_resnet18_8xb32_in1k.py (mdistiller: T 1, CE 0.5, KD 0.5), the KD weight
# split between the two teachers; not a published result.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']  # student, data, schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmpretrain model zoo), download into checkpoints/:
# ResNet-34, top-1 73.62:
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth  # noqa: E501
# ResNet-50, top-1 76.55:
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth  # noqa: E501
r34_ckpt = 'checkpoints/resnet34_8xb32_in1k_20210831-f257d4e6.pth'
r50_ckpt = 'checkpoints/resnet50_8xb32_in1k_20210831-ea4938fc.pth'

student = _base_.model
# mmpretrain keeps the normalisation at the config's top level: give it to the student
student.data_preprocessor = _base_.data_preprocessor
student.head.loss.loss_weight = 0.5  # CE 0.5

model = dict(
    _delete_=True,
    _scope_='mmpretrain',  # its library's registry, also when inherited as mmdistill::
    type='DistillClassifier',
    student=student,
    teachers=dict(  # each with its own normalisation, recorder and taps
        r34=dict(config='mmpretrain::resnet/resnet34_8xb32_in1k.py', checkpoint=r34_ckpt),
        r50=dict(config='mmpretrain::resnet/resnet50_8xb32_in1k.py', checkpoint=r50_ckpt)),
    distill_losses=dict(
        kd_r34=dict(
            type='KDLoss',
            teacher_name='r34',
            student='head',  # the logits
            teacher='head',
            temperature=1.0,
            loss_weight=0.25),
        kd_r50=dict(
            type='KDLoss',
            teacher_name='r50',
            student='head',
            teacher='head',
            temperature=1.0,
            loss_weight=0.25)))
del student

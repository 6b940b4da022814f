# CTKD, Curriculum Temperature KD (Li et al., AAAI 2023): ResNet-34 -> ResNet-18 on ImageNet-1k.
# Official recipe: zhengli97/CTKD scripts/run_imagenet_distill.sh (KD + CTKD: 69.90 -> 71.32)
# KD with one learnable global temperature T = 1 + 20 * sigmoid(theta) trained adversarially
# through a gradient-reversal layer whose strength rises 0 -> 1 along a cosine over the first 5
# epochs (CTKDTemperatureHook); CE 1 (-r 1), KD 1 (-a 1); 120 epochs, 8 GPUs x 32 = 256 images,
# SGD lr 0.1, steps at 30/60/90, wd 1e-4.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']  # student, data, schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmpretrain model zoo, top-1 73.62), download into checkpoints/:
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth  # noqa: E501
teacher_ckpt = 'checkpoints/resnet34_8xb32_in1k_20210831-f257d4e6.pth'

student = _base_.model
# mmpretrain keeps the normalisation at the config's top level: give it to the student
student.data_preprocessor = _base_.data_preprocessor  # CE 1.0 (the base's loss weight)

model = dict(
    _delete_=True,
    _scope_='mmpretrain',  # its library's registry, also when inherited as mmdistill::
    type='DistillClassifier',
    student=student,
    teacher=dict(
        config='mmpretrain::resnet/resnet34_8xb32_in1k.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        ctkd=dict(
            type='CTKDLoss',
            student='head',
            teacher='head',
            base='kd',  # the learnable temperature drives plain KD
            t_start=1.0,
            t_end=20.0,
            loss_weight=1.0)))
del student

# the gradient-reversal curriculum: lambda 0 -> 1 over 5 epochs (official ImageNet setting)
custom_hooks = [dict(type='CTKDTemperatureHook', max_lambda=1.0, min_lambda=0.0,
                     decay_loops=5)]
train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)

# DKD (Zhao et al., CVPR 2022): ResNet-50 (teacher) -> MobileNetV2 (student) on ImageNet-1k.
# Official recipe: megvii-research/mdistiller configs/imagenet/r50_mv2/dkd.yaml (no published
# number for this pair; the paper's R50 -> MobileNetV1 with the same recipe: 68.87 -> 72.05)
# DKD on the logits: alpha 1, beta 2, T 1, warmup 1 epoch; CE 1.0; 100 epochs, SGD lr 0.2 for
# 512 images (= lr 0.1 for 8 GPUs x 32), steps at 30/60/90, wd 1e-4. This replaces the
# 300-epoch schedule of mmpretrain's MobileNetV2 config (its 71.86 baseline).
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py']  # student, data

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmpretrain model zoo, top-1 76.55), download into checkpoints/:
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth  # noqa: E501
teacher_ckpt = 'checkpoints/resnet50_8xb32_in1k_20210831-ea4938fc.pth'

student = _base_.model
# mmpretrain keeps the normalisation at the config's top level: give it to the student
student.data_preprocessor = _base_.data_preprocessor  # CE 1.0 (the base's loss weight)

model = dict(
    _delete_=True,
    _scope_='mmpretrain',  # its library's registry, also when inherited as mmdistill::
    type='DistillClassifier',
    student=student,
    teacher=dict(
        config='mmpretrain::resnet/resnet50_8xb32_in1k.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        dkd=dict(
            type='DKDLoss',
            student='head',
            teacher='head',
            alpha=1.0,
            beta=2.0,
            temperature=1.0,
            weight_schedule=dict(warmup=1, by_epoch=True))))  # DKD's warm-up, 1 epoch
del student

# the official DKD ImageNet schedule (mdistiller)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(
    _delete_=True, type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)

# DKD (Zhao et al., CVPR 2022): ResNet-34 (teacher) -> ResNet-18 (student) on ImageNet-1k.
# Official recipe: megvii-research/mdistiller configs/imagenet/r34_r18/dkd.yaml (69.90 -> 71.70)
# DKD on the logits: alpha 1 (TCKD), beta 0.5 (NCKD), T 1, warmup 1 epoch; CE 1.0; 100 epochs,
# SGD lr 0.2 for 512 images (= mmpretrain's lr 0.1 for 8 GPUs x 32), steps at 30/60/90, wd 1e-4.
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
        dkd=dict(
            type='DKDLoss',
            student='head',  # the logits; DistillClassifier gives the labels
            teacher='head',
            alpha=1.0,
            beta=0.5,
            temperature=1.0,
            # DKD's warm-up: min(epoch / 1, 1), epochs counted from 1
            weight_schedule=dict(warmup=1, by_epoch=True))))
del student
